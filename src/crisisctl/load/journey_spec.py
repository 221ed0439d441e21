"""The scenario fields of journeys: ordered ``steps``, ``feeders`` and ``extract`` rules.

A journey is what each closed-model virtual user does, in order, again and again (or, in the
open model, what each arrival does once): a step is a
request (method, path, query, headers, body with ``{name}`` placeholders) with an optional
``name`` (its figures and thresholds are grouped under it) and ``extract`` rules that take a
value out of its response for later steps (``json`` — a JMESPath expression —, ``header`` or
``regex``). ``feeders`` give per-user data from a CSV or JSONL file (`FeederSpec`). Only the
shapes are checked here; `crisisctl.load.journey` compiles templates and rules and reports
unknown names at ``file:line``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

__all__ = ["ExtractSpec", "FeederSpec", "StepSpec"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class FeederSpec(_Model):
    """Rows of per-user data: ``csv: file`` or ``jsonl: file``; each column (CSV header, JSON
    key) becomes a variable. ``mode``: ``sequential`` (each journey takes the next row,
    wrapping), ``random`` (a row at random per journey) or ``unique`` (each closed-model user
    keeps its own row, each open-model arrival gets its own; more users or arrivals than rows
    is an error before the run)."""

    csv: str | None = None
    jsonl: str | None = None
    mode: Literal["sequential", "random", "unique"] = "sequential"

    @model_validator(mode="after")
    def _one_file(self) -> FeederSpec:
        if (self.csv is None) == (self.jsonl is None):
            raise ValueError("give exactly one of csv or jsonl")
        return self

    @property
    def file(self) -> str:
        """The data file's path (relative to the scenario file)."""
        return self.csv if self.csv is not None else str(self.jsonl)


class ExtractSpec(_Model):
    """Where a value comes from in a response: ``json`` (a JMESPath expression on the JSON
    body, e.g. ``data.token`` or ``items[0].id``), ``header`` (a header name) or ``regex``
    (on the body; the first group if the pattern has one, else the whole match)."""

    json_path: str | None = Field(None, alias="json")
    header: str | None = None
    regex: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"json": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _one_rule(self) -> ExtractSpec:
        given = [k for k in ("json_path", "header", "regex") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of json, header or regex")
        return self


def _status_list(value: Any) -> Any:
    return [value] if isinstance(value, int) else value


StatusList = Annotated[list[Annotated[int, Field(ge=100, le=599)]], BeforeValidator(_status_list)]


class StepSpec(_Model):
    """One step of a journey; `path`, `query`, `headers` and bodies may hold ``{name}``."""

    name: str | None = None
    method: str = Field("GET", pattern=r"^[A-Za-z]+$")
    path: str = Field(pattern=r"^/")
    query: dict[str, str | int | float | bool] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: Any = Field(None, alias="json")
    form: dict[str, str] | None = None
    body: str | None = None
    expect_status: StatusList = Field(default_factory=list)
    extract: dict[str, ExtractSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_body(self) -> StepSpec:
        if sum(x is not None for x in (self.json_body, self.form, self.body)) > 1:
            raise ValueError("give at most one of json, form or body")
        return self

    @property
    def label(self) -> str:
        """The step's name (default: ``METHOD path``)."""
        return self.name or f"{self.method.upper()} {self.path}"
