"""The test suite's warnings policy (tests/conftest.py): a DeprecationWarning or FutureWarning that
our own call causes is an error where it is raised; one that a library's call into another
library causes is not. Checked on two stand-in libraries installed under a site-packages folder."""
from __future__ import annotations

import sys
import textwrap

import pytest

LIBRARIES = {
    "oldlib": '''
        import functools, warnings

        def renamed_kwarg(func):  # like transformers' deprecate_kwarg: warns about its own wrapper
            @functools.wraps(func)
            def wrapper(*args, **kwargs):
                if "past" in kwargs:
                    warnings.warn("`past` is deprecated, use `cache`", FutureWarning, stacklevel=2)
                    kwargs["cache"] = kwargs.pop("past")
                return func(*args, **kwargs)
            return wrapper

        @renamed_kwarg
        def forward(cache=None):
            return cache

        def old_function():
            warnings.warn("old_function is deprecated", DeprecationWarning, stacklevel=2)
    ''',
    "otherlib": '''
        import oldlib

        def uses_the_old_name():
            return oldlib.forward(past=1)
    ''',
}


@pytest.fixture
def libraries(tmp_path, monkeypatch):
    site = tmp_path / "site-packages"
    for name, source in LIBRARIES.items():
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(site))
    yield
    for name in LIBRARIES:
        sys.modules.pop(name, None)


def test_a_deprecated_keyword_we_pass_is_an_error_even_when_the_library_blames_its_wrapper(libraries):
    import oldlib

    with pytest.raises(FutureWarning, match="`past` is deprecated"):
        oldlib.forward(past=1)
    assert oldlib.forward(cache=1) == 1  # the new name is fine


def test_a_deprecated_function_we_call_is_an_error(libraries):
    import oldlib

    with pytest.raises(DeprecationWarning, match="old_function is deprecated"):
        oldlib.old_function()


def test_a_deprecation_that_one_library_causes_in_another_is_not_ours(libraries):
    import otherlib

    assert otherlib.uses_the_old_name() == 1  # warned (and recorded), not raised


def test_transformers_cache_keyword_is_passed_by_the_name_the_model_declares(tiny_lm):
    """transformers ≥ 5.24 takes the KV cache as ``cache`` and deprecates ``past_key_values``;
    older releases take ``past_key_values``. A cached step passes whichever the model declares,
    so it runs on both ends of the supported range without a deprecation (an error here)."""
    import inspect

    import torch
    import transformers
    from packaging.version import Version

    from tokengym.lm.cached_lm import CachedLM, cache_keyword

    new = Version(transformers.__version__) >= Version("5.24")
    assert cache_keyword(tiny_lm) == ("cache" if new else "past_key_values")
    assert cache_keyword(tiny_lm) in inspect.signature(tiny_lm.forward).parameters
    lm = CachedLM(tiny_lm)
    lm.prefill(torch.tensor([[1, 2, 3]]), torch.ones(1, 3, dtype=torch.bool))
    lm.step(torch.tensor([4]))
    assert lm.cache.get_seq_length() == 4
    if new:
        with pytest.raises(FutureWarning, match="past_key_values"):
            tiny_lm(input_ids=torch.tensor([[1]]), past_key_values=transformers.DynamicCache(), use_cache=True)
