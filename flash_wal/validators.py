"""attrs validators that raise ConfigurationError, so bad configuration is a FlashError."""

from typing import Any, Callable, Dict, Optional, Type, TypeVar

from .errors import ConfigurationError

Validator = Callable[[Any, Any, Any], None]
C = TypeVar("C")


def config_from(config_class: Type[C], config: Optional[C], kwargs: Dict[str, Any]) -> C:
    """``Thing(ThingConfig(...))`` or, the same, ``Thing(...)`` with the config's keywords."""
    if config is None:
        return config_class(**kwargs)
    if kwargs:
        raise ConfigurationError(f"pass either a {config_class.__name__} or keyword arguments, not both")
    if not isinstance(config, config_class):
        raise ConfigurationError(f"expected a {config_class.__name__}, got {config!r}")
    return config


def instance_of(*types: type) -> Validator:
    """Like ``attr.validators.instance_of``; a bool is not accepted as an int."""
    names = " or ".join(t.__name__ for t in types)

    def check(_instance: Any, attribute: Any, value: Any) -> None:
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ConfigurationError(f"{attribute.name} must be {names}, got {value!r}")

    return check


def seconds(minimum: float = 0.0, *, inclusive: bool = True) -> Validator:
    """A number of seconds no smaller than ``minimum`` (or larger, if not inclusive)."""
    bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"

    def check(_instance: Any, attribute: Any, value: Any) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or value < minimum
            or (not inclusive and value == minimum)
        ):
            raise ConfigurationError(f"{attribute.name} must be a number of seconds {bound}; got {value!r}")

    return check


def positive_int(_instance: Any, attribute: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{attribute.name} must be a positive integer, got {value!r}")
