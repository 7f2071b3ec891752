"""The one reader of Dockerfiles: their ADD instructions, and what the others set in the image config."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Add:
    """One ADD instruction: its line number, source and destination; a malformed one has source ""
    and the whole line as destination."""

    line: int
    source: str
    dest: str


def add_instructions(text: str) -> list[Add]:
    """The ADD instructions of a Dockerfile, in order (read by `instructions`, as every other one)."""
    found = []
    for step in instructions(text):
        if step.keyword == "ADD":
            words = step.args.split()
            found.append(Add(step.line, *words) if len(words) == 2 else Add(step.line, "", f"ADD {step.args}"))
    return found


# -- what the other instructions set in the image config ------------------------------------------

# The instructions that set the image config, by the config key each sets.
CONFIG_INSTRUCTIONS = {
    "ENV": "Env",
    "LABEL": "Labels",
    "USER": "User",
    "WORKDIR": "WorkingDir",
    "EXPOSE": "ExposedPorts",
    "VOLUME": "Volumes",
    "STOPSIGNAL": "StopSignal",
    "ENTRYPOINT": "Entrypoint",
    "CMD": "Cmd",
}


@dataclass(frozen=True)
class Instruction:
    """One instruction: the line it starts on, its keyword (upper case) and the rest, continuation lines joined."""

    line: int
    keyword: str
    args: str


@dataclass(frozen=True)
class Settings:
    """What a Dockerfile sets in the image config, as the builder reads it, with the line that set each.

    `env` and `labels` map names to (value, line) in the order first set; `config` maps the other keys
    (`User`, `WorkingDir`, `Entrypoint`, `Cmd`, `StopSignal`, `ExposedPorts`, `Volumes`) to (value, line) as
    `docker inspect` shows them; `base` is FROM's argument; `other` every instruction that is neither FROM,
    ADD nor one of these (RUN, COPY, SHELL, ...).
    """

    base: str | None
    env: dict[str, tuple[str, int]]
    labels: dict[str, tuple[str, int]]
    config: dict[str, tuple[object, int]]
    other: tuple[Instruction, ...]


def instructions(text: str) -> list[Instruction]:
    """A Dockerfile's instructions in order; comments and blank lines skipped, `\\` continuations joined."""
    found, pending, start = [], "", 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\") and not stripped.endswith("\\\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        found.append(Instruction(start, keyword.upper(), args.strip()))
        pending = ""
    return found


def settings(text: str) -> Settings:
    """What the instructions of a Dockerfile set in the image config (see `Settings`).

    ENV and LABEL words are read as the builder reads them: `"..."` with `\\"`, `\\\\` and `\\$` escapes, `'...'`
    as written, `\\` escaping the next character outside quotes, `$NAME` and `${NAME}` expanded from the ENV
    lines above; ENTRYPOINT and CMD in JSON (exec) form, or shell form as `/bin/sh -c`.

    Raises:
        ValueError: a line the builder would refuse (ENV without a value, an unclosed quote), naming its line.
    """
    base, env, labels, config, other = None, {}, {}, {}, []
    for step in instructions(text):
        keyword, args = step.keyword, step.args
        try:
            if keyword == "FROM":
                base = args
            elif keyword == "ADD":
                continue
            elif keyword in ("ENV", "LABEL"):
                pairs = _pairs(args, {name: value for name, (value, _) in env.items()})
                target = env if keyword == "ENV" else labels
                for name, value in pairs:
                    target[name] = (value, step.line)
            elif keyword in ("ENTRYPOINT", "CMD"):
                config[CONFIG_INSTRUCTIONS[keyword]] = (_command(args), step.line)
            elif keyword in ("USER", "WORKDIR", "STOPSIGNAL"):
                config[CONFIG_INSTRUCTIONS[keyword]] = (_words(args, {})[0] if args else "", step.line)
            elif keyword == "EXPOSE":
                ports = [word if "/" in word else f"{word}/tcp" for word in _words(args, {})]
                earlier = config.get("ExposedPorts", ([], 0))[0]
                config["ExposedPorts"] = (sorted({*earlier, *ports}), step.line)
            elif keyword == "VOLUME":
                earlier = config.get("Volumes", ([], 0))[0]
                config["Volumes"] = (sorted({*earlier, *_list(args)}), step.line)
            else:
                other.append(step)
        except ValueError as exc:
            raise ValueError(f"line {step.line}: {keyword} {args}: {exc}") from None
    return Settings(base, env, labels, config, tuple(other))


def _command(args: str) -> list[str]:
    try:
        value = json.loads(args)
    except ValueError:
        value = None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return ["/bin/sh", "-c", args]


def _list(args: str) -> list[str]:
    try:
        value = json.loads(args)
    except ValueError:
        return _words(args, {})
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise ValueError("not a JSON list of strings")


def _pairs(args: str, env: dict[str, str]) -> list[tuple[str, str]]:
    words = _words(args, env)
    if words and "=" not in words[0]:  # the old form: `ENV NAME the rest of the line`
        name, _, rest = args.partition(" ")
        if not rest.strip():
            raise ValueError(f"{name} has no value")
        return [(name, " ".join(_words(rest.strip(), env)))]
    pairs = []
    for word in words:
        name, sep, value = word.partition("=")
        if not sep or not name:
            raise ValueError(f"{word!r} is not NAME=value")
        pairs.append((name, value))
    return pairs


def _words(text: str, env: dict[str, str]) -> list[str]:
    """Split on unquoted blanks, quotes and escapes resolved, `$NAME` expanded (Docker's shell-word rules)."""
    words, word, quote, started, i = [], [], None, False, 0
    while i < len(text):
        char = text[i]
        if quote == "'":
            if char == "'":
                quote = None
            else:
                word.append(char)
        elif char == "\\" and i + 1 < len(text) and (quote is None or text[i + 1] in '"\\$'):
            i += 1
            word.append(text[i])
        elif char == "$" and i + 1 < len(text):
            name, i = _variable(text, i + 1)
            if name is None:
                word.append("$")
                continue
            word.append(env.get(name, ""))
            continue
        elif quote == '"':
            if char == '"':
                quote = None
            else:
                word.append(char)
        elif char in "'\"":
            quote, started = char, True
        elif char in " \t":
            if word or started:
                words.append("".join(word))
            word, started = [], False
        else:
            word.append(char)
        i += 1
    if quote is not None:
        raise ValueError(f"unclosed {quote}")
    if word or started:
        words.append("".join(word))
    return words


def _variable(text: str, i: int) -> tuple[str | None, int]:
    """The variable name at `text[i:]` (after a `$`) and where the text after it starts; None: no name."""
    if text[i] == "{":
        end = text.find("}", i)
        if end < 0:
            return None, i
        return text[i + 1 : end], end + 1
    end = i
    while end < len(text) and (text[end].isalnum() or text[end] == "_"):
        end += 1
    return (text[i:end], end) if end > i else (None, i)
