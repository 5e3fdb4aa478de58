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

# Keyword-constrained generation (CommonGen-like): the reward is the fraction of the two listed
# words that the continuation uses. Frequent words, so the small embedded model already scores
# above zero before training and RL has a signal to amplify.
KEYWORD_PAIRS = [
    ("man", "life"), ("time", "world"), ("love", "people"), ("day", "good"), ("woman", "man"),
    ("life", "time"), ("world", "people"), ("good", "man"), ("thing", "time"), ("way", "life"),
    ("love", "life"), ("people", "time"), ("work", "day"), ("god", "world"), ("money", "man"),
    ("mind", "life"), ("night", "day"), ("truth", "world"), ("friend", "love"), ("house", "man"),
    ("name", "man"), ("year", "life"), ("heart", "love"), ("war", "world"), ("woman", "love"),
]


def keyword_prompt(first: str, second: str) -> str:
    return f"Words: {first}, {second}. Sentence:"


KEYWORD_PROMPTS = [keyword_prompt(a, b) for a, b in KEYWORD_PAIRS]


def keywords_of(prompt: str) -> list[str]:
    """The two required words of a keyword prompt (inverse of :func:`keyword_prompt`)."""
    if not (prompt.startswith("Words: ") and prompt.endswith(". Sentence:")):
        raise ValueError(f"not a keyword prompt: {prompt!r}")
    return [w.strip() for w in prompt.removeprefix("Words: ").removesuffix(". Sentence:").split(",")]

# Verifiable arithmetic (Arithmetic-v0): small sums (a + b <= 5) after a two-example prefix. The
# embedded model puts about a quarter of its next-token mass on digits after "... =" and about 3%
# on the right one (measured; 1.5% with sums up to 9), so GRPO has a small signal to amplify.
ARITHMETIC_PREFIX = "1 + 1 = 2. 2 + 3 = 5."


def arithmetic_prompt(a: int, b: int) -> str:
    return f"{ARITHMETIC_PREFIX} {a} + {b} ="


ARITHMETIC_MAX_SUM = 5


def arithmetic_records() -> list[dict[str, str]]:
    """Every ``a + b`` with ``a, b ≥ 0`` and ``a + b ≤ 5``, in a fixed order: ``{"prompt", "answer"}``."""
    n = ARITHMETIC_MAX_SUM
    return [{"prompt": arithmetic_prompt(a, b), "answer": str(a + b)} for a in range(n + 1) for b in range(n + 1 - a)]
