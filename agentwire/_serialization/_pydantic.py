"""JSON for pydantic models, as AutoGen writes it (compact ``model_dump_json``)."""

from __future__ import annotations

from typing import Final, Generic, TypeVar

from .._errors import SerializationError
from ._base import JSON_DATA_CONTENT_TYPE, pydantic_base_model, type_name

__all__ = ["PydanticJsonSerializer"]

T = TypeVar("T")


class PydanticJsonSerializer(Generic[T]):
    """JSON for a pydantic ``BaseModel`` (as AutoGen: compact ``model_dump_json``).

    pydantic is not a dependency of agentwire; this works when it is installed.
    """

    __slots__ = ("message_type", "type_name")

    data_content_type: Final = JSON_DATA_CONTENT_TYPE

    def __init__(self, cls: type[T]) -> None:
        base = pydantic_base_model()
        if base is None or not (isinstance(cls, type) and issubclass(cls, base)):
            raise SerializationError(
                f"PydanticJsonSerializer needs a pydantic BaseModel, got {cls!r}"
            )
        self.message_type = cls
        self.type_name = type_name(cls)

    def serialize(self, message: T) -> bytes:
        try:
            return message.model_dump_json().encode("utf-8")  # type: ignore[attr-defined,no-any-return]
        except Exception as exc:
            raise SerializationError(f"cannot serialize {self.type_name} as JSON: {exc}") from exc

    def deserialize(self, payload: bytes) -> T:
        try:
            return self.message_type.model_validate_json(payload)  # type: ignore[attr-defined,no-any-return]
        except Exception as exc:
            raise SerializationError(f"cannot deserialize {self.type_name}: {exc}") from exc

    def __repr__(self) -> str:
        return f"PydanticJsonSerializer({self.message_type.__qualname__})"
