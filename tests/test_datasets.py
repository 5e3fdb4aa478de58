"""Prompt datasets with columns: loading (lists of records, .jsonl, datasets.Dataset) and how the
env carries each row's columns through resets, groups and partial resets."""
from __future__ import annotations

import json

import pytest

from tokengym.envs.records import load_prompt_records


def test_plain_prompts_have_no_columns():
    records = load_prompt_records(["a", "b"])
    assert records.prompts == ["a", "b"] and records.columns == {}
    assert load_prompt_records([[1, 2], [3]]).prompts == [[1, 2], [3]]


def test_records_give_prompts_and_aligned_columns():
    records = load_prompt_records([{"prompt": "p0", "answer": "a0", "id": 0}, {"prompt": "p1", "answer": "a1", "id": 1}])
    assert records.prompts == ["p0", "p1"]
    assert records.columns == {"answer": ["a0", "a1"], "id": [0, 1]}


@pytest.mark.parametrize(
    "bad, match",
    [
        ([{"prompt": "p", "x": 1}, {"prompt": "q"}], "record 1 has columns"),
        ([{"text": "p"}], "record 0 has no 'prompt'"),
        ([{"prompt": "p"}, "q"], "mixes records"),
        ([], "non-empty"),
    ],
)
def test_bad_records_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        load_prompt_records(bad)


def test_jsonl_file(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "p0", "answer": "7"}\n\n{"prompt": "p1", "answer": "8"}\n')
    records = load_prompt_records(str(path))
    assert records.prompts == ["p0", "p1"] and records.columns == {"answer": ["7", "8"]}


@pytest.mark.parametrize(
    "lines, match",
    [
        (['{"prompt": "p"}', "{not json"], r"data.jsonl:2: invalid JSON"),
        (['{"prompt": "p"}', "[1, 2]"], r"data.jsonl:2: expected a JSON object"),
        (['{"prompt": "p"}', '{"text": "q"}'], r"data.jsonl:2: the record has no 'prompt'"),
        (['{"prompt": "p", "a": 1}', '', '{"prompt": "q"}'], r"data.jsonl:3: columns"),
        ([], r"data.jsonl: no records"),
    ],
)
def test_jsonl_errors_name_file_line_and_problem(tmp_path, lines, match):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=match):
        load_prompt_records(path)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_prompt_records(tmp_path / "missing.jsonl")


def test_datasets_dataset():
    datasets = pytest.importorskip("datasets")
    dataset = datasets.Dataset.from_list([{"prompt": "p0", "answer": "7"}, {"prompt": "p1", "answer": "8"}])
    records = load_prompt_records(dataset)
    assert records.prompts == ["p0", "p1"] and records.columns == {"answer": ["7", "8"]}
