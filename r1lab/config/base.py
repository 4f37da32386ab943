"""What every settings class shares: strict fields, the one rule for changing settings, and error
messages that name the field and suggest the close match."""

from __future__ import annotations

import difflib
from typing import TypeVar, get_args

from pydantic import BaseModel, ConfigDict, ValidationError

from r1lab.errors import ConfigError, did_you_mean  # noqa: F401  (re-exported: config's errors)

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    # nan and inf are never meant (rl.lr=.inf): refuse them at load, not as a nan loss an hour later
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def inner_model(model: type[BaseModel] | None, name: str) -> type[BaseModel] | None:
    """The settings class under a field: a sub-config's (rl), a list entry's (stages), or, for a block of
    changes (a stage's rl), the class it changes (named in the model's `changes_to`)."""
    if model is None:
        return None
    if name in getattr(model, "changes_to", {}):
        return model.changes_to[name]
    field = model.model_fields.get(name)
    for t in (field.annotation, *get_args(field.annotation)) if field else ():
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None


def apply_changes(model: type[BaseModel], base: dict, changes: dict, *, partial: bool = False, where: str = "") -> dict:
    """`changes` over `base`, both plain data of `model`: the rule described in r1lab.config.

    A key may be a dotted path (rl.rewards.format): it sets that one entry and keeps the others. A mapping
    given for a sub-config (rl, sampling, a stage's rl block) merges key by key; any other value replaces
    the field, a mapping for a dict-valued field (rl.rewards) included. `partial`: `base` is a block of
    changes, resolved later over the run's settings, so a dotted key into a dict field it lacks is kept as is.
    """
    out = dict(base)
    for key, value in changes.items():
        head, dot, rest = str(key).partition(".")
        field = model.model_fields.get(head) if model else None
        inner = inner_model(model, head)
        is_block = head in getattr(model, "changes_to", {})
        if field is not None and head not in out and not field.is_required() and (inner or not partial):
            out[head] = _default(field.get_default(call_default_factory=True))
        current = out.get(head)
        if isinstance(current, list) and dot:
            out[head] = _change_entry(inner, current, rest, value, where + head)
        elif inner and isinstance(current, dict) and (dot or isinstance(value, dict)):
            out[head] = apply_changes(inner, current, {rest: value} if dot else value, partial=partial or is_block,
                                      where=f"{where}{head}.")
        elif dot and isinstance(current, dict):
            out[head] = {**current, rest: value}  # one entry of a dict field; the rest (one key) may hold dots
        elif dot and partial and current is None:
            out[key] = value  # e.g. a stage's rl: {rewards.format: 0.5}, merged into the run's rewards later
        elif dot and current is not None:
            raise ConfigError(f"{where}{key}: {where}{head} is {current!r}, which has no fields to set")
        else:
            out[head] = {rest: value} if dot else value  # an unknown field is named by validation
    return out


def _default(value):
    """A field's default as plain data. A sub-config starts empty: validation fills in its defaults (and
    rl.sampling / eval.sampling inherit the run's `sampling` only where they are not written down)."""
    if isinstance(value, BaseModel):
        return {}
    if isinstance(value, list):
        return [v.model_dump(exclude_unset=True) if isinstance(v, BaseModel) else v for v in value]
    return value


def _change_entry(model, items: list, rest: str, value, where: str) -> list:
    """stages.<name or index>[.field...]: a list entry changed by its name (which may hold dots) or index."""
    names = [item.get("name") if isinstance(item, dict) else None for item in items]
    ref = max((n for n in names if isinstance(n, str) and (rest == n or rest.startswith(n + "."))), key=len, default=None)
    if ref is not None:
        i, sub = names.index(ref), rest[len(ref) + 1:]
    else:
        first, _, sub = rest.partition(".")
        if not (first.isdigit() and int(first) < len(items)):
            raise ConfigError(f"{where}.{first}: no such entry (names: {', '.join(str(n) for n in names)})")
        i = int(first)
    items = list(items)
    if isinstance(items[i], dict) and (sub or isinstance(value, dict)):
        items[i] = apply_changes(model, items[i], {sub: value} if sub else value, where=f"{where}.{ref or i}.")
    else:
        items[i] = value
    return items


def changed(model: type[M], base: BaseModel, changes: dict, where: str) -> M:
    """`base` with `changes` applied, validated; errors name the fields under `where` (stages.x.rl)."""
    try:
        return model.model_validate(apply_changes(model, base.model_dump(), changes))
    except ValidationError as err:
        raise ConfigError("\n".join(error_lines(err, model, where + "."))) from None


def _siblings(model: type[BaseModel] | None, loc: tuple) -> list[str]:
    """Field names of the settings class that `loc` points into, and of its sub-configs as `sub.field`
    (eval.temperature -> eval.sampling.temperature): the candidates for a close-match suggestion."""
    for part in loc:
        if not isinstance(part, int):  # an int is a list entry: same class
            model = inner_model(model, part)
    if model is None:
        return []
    subs = {name: inner_model(model, name) for name in model.model_fields}
    return [*model.model_fields, *(f"{name}.{f}" for name, sub in subs.items() if sub for f in sub.model_fields)]


def error_lines(err: ValidationError, model: type[BaseModel] | None = None, prefix: str = "") -> list[str]:
    """One line per error: its field's path (after `prefix`), what is wrong and, for an unknown field,
    the close match among its siblings in `model`."""
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        where = prefix + ".".join(map(str, loc))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(loc[-1]), _siblings(model, loc[:-1]), n=1)
            suggestion = ".".join(map(str, (*loc[:-1], close[0]))) if close else None
            lines.append(f"{where}: unknown field" + (f" (did you mean '{suggestion}'?)" if suggestion else ""))
        elif not loc:  # a check across fields or stages: its message names them
            lines += [f"{prefix.rstrip('.')}: {msg}"] if prefix else msg.splitlines()
        elif isinstance(e.get("input"), dict):
            lines.append(f"{where}: {msg}")
        else:
            lines.append(f"{where}: {msg} (got {e.get('input')!r})")
    return lines


def format_errors(err: ValidationError, source: str, model: type[BaseModel] | None = None) -> str:
    """'invalid SOURCE:' and one indented line per error: what every r1lab command prints for bad settings."""
    return f"invalid {source}:\n" + "\n".join(f"  {line}" for line in error_lines(err, model))
