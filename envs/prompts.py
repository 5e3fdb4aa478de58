"""Prompt pools shipped with the package (no downloads)."""

SENTIMENT_PROMPTS = [
    "The movie was",
    "I watched this film last night and",
    "The food at this restaurant",
    "My stay at the hotel",
    "The service here",
    "This book is",
    "I think that the new album",
    "The acting in this show",
    "Our trip to the city",
    "The staff at the store",
    "After reading the reviews, I",
    "The plot of the story",
    "This phone",
    "The weather today",
    "My first day at the new job",
    "The concert last night",
    "The teacher said that",
    "Honestly, the ending",
    "The coffee in this place",
    "I have to say that the game",
    "The room was",
    "Compared to the last one, this",
    "The music in the film",
    "When I opened the box, I",
    "The people in this town",
    "My experience with this company",
    "The price of the meal",
    "Overall, the performance",
    "The characters in the novel",
    "The garden behind the house",
    "Our waiter",
    "The museum was",
    "This car",
    "The new version of the app",
    "The view from the top",
    "My neighbor told me the party",
    "The lecture was",
    "The dessert",
    "The beach near the hotel",
    "Life in the city",
]

# Keyword-constrained generation (CommonGen-like): the reward is the fraction of the listed words
# that the continuation uses. Common words, so a small model already scores above zero.
KEYWORD_PAIRS = [
    ("dog", "park"), ("sun", "day"), ("love", "life"), ("money", "time"), ("man", "woman"),
    ("book", "read"), ("water", "cold"), ("night", "sleep"), ("house", "old"), ("work", "hard"),
    ("friend", "good"), ("world", "people"), ("god", "man"), ("war", "peace"), ("city", "light"),
    ("food", "eat"), ("car", "road"), ("music", "play"), ("child", "mother"), ("king", "land"),
    ("tree", "green"), ("rain", "wind"), ("heart", "love"), ("truth", "lie"), ("door", "open"),
    ("fire", "hot"), ("sea", "ship"), ("school", "learn"), ("life", "death"), ("home", "family"),
]


def keyword_prompt(first: str, second: str) -> str:
    return f"Use the words {first} and {second}. {first.capitalize()}"


KEYWORD_PROMPTS = [keyword_prompt(a, b) for a, b in KEYWORD_PAIRS]


def keywords_of(prompt: str) -> list[str]:
    """The two required words of a keyword prompt (inverse of :func:`keyword_prompt`)."""
    words = prompt.split(".")[0].removeprefix("Use the words ").split(" and ")
    if len(words) != 2:
        raise ValueError(f"not a keyword prompt: {prompt!r}")
    return [w.strip() for w in words]
