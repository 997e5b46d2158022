"""The field types every rule model is built from: strict closed models, located errors, localised
text, durations, aliases and numbers.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from ..core.times import DURATION_HINT, TimeFormatError, parse_duration
from ..core.units import exact_number, shown

LANGUAGES = ("en", "zh-CN")


Op = Literal["gt", "gte", "lt", "lte", "eq"]


COMPARATORS: tuple[Op, ...] = ("gt", "gte", "lt", "lte", "eq")


_ID = r"^[a-z0-9]+(?:[.-][a-z0-9]+)*$"


_ALIAS = r"^[a-z][a-z0-9_]*$"


def _err(code: str, message: str, hint: str = "", at: str | None = None) -> PydanticCustomError:
    """An error whose type is our diagnostic code; ``at`` names the key it is about, for model-level checks."""
    ctx: dict[str, str] = {"hint": hint}
    if at is not None:
        ctx["at"] = at
    return PydanticCustomError(code, message, ctx)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True, frozen=True)

    @model_validator(mode="after")
    def _exact_numbers(self) -> Any:
        """Every number of a rule is compared or computed exactly: NaN, infinity, a number beyond a float
        (10**400) or an integer beyond 2**53 cannot be, and crashed the unit conversion or the rule engine."""
        for name, value in self.__dict__.items():
            if isinstance(value, int | float) and not isinstance(value, bool) and not exact_number(value):
                key = type(self).model_fields[name].alias or name
                raise _err("E114", f"{key}: {shown(value)} is not a number that can be compared exactly",
                           "write a finite number (at most 2**53 for a whole number)", at=key)
        return self


def _duration(value: Any) -> str:
    if not isinstance(value, str):
        raise _err("E108", f"expected a duration like '72h', got {value!r}", DURATION_HINT)
    try:
        parse_duration(value)
    except TimeFormatError as exc:
        raise _err("E108", str(exc), DURATION_HINT) from exc
    return value


Duration = Annotated[str, Field(description="A duration: a number and a unit (min, h, d, w), e.g. 72h.",
                                examples=["24h", "3d"])]


AliasName = Annotated[str, Field(pattern=_ALIAS, description="A name for the matched fact, used by later "
                                 "conditions and in rationale templates.", examples=["third_pulse"])]


Number = Annotated[float | int, Field(description="A number, in the unit the condition gives (the observation's "
                                      "or dose's unit); a derived score or ratio as computed.")]


class LocalText(Strict):
    """Text with translations; ``en`` is required."""

    en: str = Field(min_length=1, description="English text; required, and shown when no translation exists.",
                    examples=["Stop tocilizumab."])
    zh_CN: str | None = Field(default=None, alias="zh-CN", description="Simplified Chinese text; optional (English "
                              "is shown when it is left out).", examples=["停用托珠单抗。"])


Text = Annotated[str | LocalText, Field(description="Text, or a mapping of language to text "
                                        "(en required; zh-CN optional).")]


def text_in(text: str | LocalText, lang: str = "en") -> str:
    """The text in ``lang`` (English when there is no translation), without YAML's trailing newline."""
    if isinstance(text, str):
        return text.strip()
    if lang == "zh-CN" and text.zh_CN:
        return text.zh_CN.strip()
    return text.en.strip()
