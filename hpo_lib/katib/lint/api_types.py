"""``TYPE`` and ``S2``: the document as written, against Katib's API models (``kubeflow_katib_api``)."""

from __future__ import annotations

import copy
import difflib
import typing
from typing import Any

import pydantic
from kubeflow_katib_api import models as katib_models
from kubeflow_katib_api.models import V1beta1Experiment

from hpo_lib.katib.lint.common import Findings, path_text

if typing.TYPE_CHECKING:
    from pydantic_core import ErrorDetails

API_VERSION = "kubeflow.org/v1beta1"


def _walk(doc: Any, loc: tuple) -> tuple[tuple, Any]:
    """The longest prefix of a pydantic error location that exists in ``doc`` (union tags are not keys)."""
    found: tuple = ()
    for part in loc:
        if isinstance(doc, dict) and isinstance(part, str) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and isinstance(part, int) and 0 <= part < len(doc):
            doc = doc[part]
        else:
            break
        found += (part,)
    return found, doc


def _is_one_of(error: ErrorDetails, value: Any) -> bool:
    """Whether a "model_type" error is for a oneOf wrapper (IntOrString) that does accept the value."""
    cls = getattr(katib_models, (error.get("ctx") or {}).get("class_name", ""), None)
    if cls is None or not _is_one_of_model(cls):
        return False
    try:
        cls(value)
    except (ValueError, TypeError):
        return False
    return True


def check_types(doc: dict, out: Findings) -> dict:
    """TYPE findings; returns a deep copy of ``doc`` without the ill-typed values."""
    clean = copy.deepcopy(doc)
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != "Experiment":
        out.error(
            "TYPE", f"apiVersion {doc.get('apiVersion')!r} kind {doc.get('kind')!r} must be {API_VERSION} Experiment"
        )
    try:
        V1beta1Experiment.model_validate(doc)
        return clean
    except pydantic.ValidationError as exc:
        errors = exc.errors()
    bad: dict[tuple, None] = {}
    for error in errors:
        loc, value = _walk(doc, error["loc"])
        if not loc or loc in bad or (error["type"] == "model_type" and _is_one_of(error, value)):
            continue
        bad[loc] = None
        cls = getattr(katib_models, (error.get("ctx") or {}).get("class_name", ""), None)
        rule = (
            f"must be one of {', '.join(sorted(cls.model_fields['one_of_schemas'].default))}"
            if cls is not None and _is_one_of_model(cls)
            else error["msg"]
        )
        out.error("TYPE", f"{path_text(loc)} = {value!r} has the wrong type for Katib's API: {rule}")
    # deepest and last first, so deleting one value leaves the others' locations valid
    for loc in sorted(bad, key=lambda lo: [(0, p) if isinstance(p, int) else (1, p) for p in lo], reverse=True):
        _, parent = _walk(clean, loc[:-1])
        del parent[loc[-1]]
    return clean


def _is_one_of_model(cls: Any) -> bool:
    """The generated oneOf wrappers (IntOrString) hold a bare int or str, not an object with keys."""
    return isinstance(cls, type) and issubclass(cls, pydantic.BaseModel) and "one_of_schemas" in cls.model_fields


def _model_in(annotation: Any) -> type[pydantic.BaseModel] | None:
    """The model inside Optional[...]/List[...]; None for dicts, scalars and oneOf wrappers."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return None if _is_one_of_model(annotation) else annotation
    if typing.get_origin(annotation) in (dict, dict):
        return None
    for arg in typing.get_args(annotation):
        model = _model_in(arg)
        if model is not None:
            return model
    return None


def unknown_keys(value: Any, model: type[pydantic.BaseModel], loc: tuple, out: Findings) -> None:
    """S2: keys the model has no alias for; Katib's Go decoder drops them without a word."""
    if not isinstance(value, dict):
        return
    fields = {field.alias or name: field for name, field in model.model_fields.items()}
    for key, item in value.items():
        field = fields.get(key)
        if field is None:
            hint = difflib.get_close_matches(str(key), list(fields), n=1)
            out.error(
                "S2",
                f"unknown field {path_text(loc + (key,))}: Katib ignores it silently"
                + (f"; did you mean {hint[0]}?" if hint else ""),
            )
            continue
        sub = _model_in(field.annotation)
        if sub is None:
            continue
        if isinstance(item, list):
            for index, element in enumerate(item):
                unknown_keys(element, sub, loc + (key, index), out)
        else:
            unknown_keys(item, sub, loc + (key,), out)
