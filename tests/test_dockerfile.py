"""The one Dockerfile reader: ADD lines, and what the other instructions set in the image config."""

from pathlib import Path

import pytest

from lambdaimages.tools.dockerfile import Instruction, add_instructions, instructions, settings

GOLDEN = Path(__file__).resolve().parent / "golden" / "Dockerfile.python3.12"

AWS = """FROM scratch

ADD 091cb1e0d543d588987eb099be509b1c01c2e3a5ed547d3a24c61a054ad862d3.tar.xz /
ADD 221d8d688777d2531ed56a66b618202d2f36a0bead689669194411a5c75e318d.tar.xz /

ENV LANG=en_US.UTF-8
ENV TZ=:/etc/localtime
ENV PATH=/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin

WORKDIR /var/task

ENTRYPOINT ["/lambda-entrypoint.sh"]
"""


def test_the_rendered_golden_dockerfile_reads_back_as_the_config_it_was_rendered_from():
    found = settings(GOLDEN.read_text())
    assert found.base == "scratch" and found.other == ()
    assert {name: value for name, (value, _) in found.env.items()} == {
        "LANG": "en_US.UTF-8",
        "TZ": ":/etc/localtime",
        "PATH": "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin",
        "TRICKY": " a \"b\" 'c' $HOME ${HOME} $$ = \\ \t é # ",
        "EMPTY": "",
    }
    assert list(found.env) == ["LANG", "TZ", "PATH", "TRICKY", "EMPTY"]
    assert {name: value for name, (value, _) in found.labels.items()} == {
        "b": "x y",
        "com.amazonaws.lambda.platform.kernel": "k6.1",
    }
    assert {key: value for key, (value, _) in found.config.items()} == {
        "WorkingDir": "/var/task",
        "ExposedPorts": ["8080/tcp"],
        "Entrypoint": ["/lambda-entrypoint.sh"],
        "Cmd": ["app.handler"],
    }
    assert found.env["LANG"][1] == 7 and found.config["Cmd"][1] == 19


def test_awss_unquoted_lines_and_the_builders_other_spellings():
    found = settings(AWS)
    assert found.env["PATH"] == ("/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin", 8)
    assert found.config == {"WorkingDir": ("/var/task", 10), "Entrypoint": (["/lambda-entrypoint.sh"], 12)}
    assert found.labels == {}
    text = (
        "FROM scratch\nENV A=1 B='two words' C=x\\ y\nENV D $A-${B}\nENV E=\"$A\" F='$A' G=\\$A\n"
        "CMD echo hi\nEXPOSE 80 53/udp\nRUN rm -rf /\nUSER nobody\nLABEL \\\n  k=v\n"
    )
    found = settings(text)
    env = {name: value for name, (value, _) in found.env.items()}
    assert env == {"A": "1", "B": "two words", "C": "x y", "D": "1-two words", "E": "1", "F": "$A", "G": "$A"}
    assert found.config["Cmd"] == (["/bin/sh", "-c", "echo hi"], 5)
    assert found.config["ExposedPorts"] == (["53/udp", "80/tcp"], 6)
    assert found.config["User"] == ("nobody", 8)
    assert found.labels == {"k": ("v", 9)}
    assert found.other == (Instruction(7, "RUN", "rm -rf /"),)
    assert [add.source for add in add_instructions(AWS)] == [
        "091cb1e0d543d588987eb099be509b1c01c2e3a5ed547d3a24c61a054ad862d3.tar.xz",
        "221d8d688777d2531ed56a66b618202d2f36a0bead689669194411a5c75e318d.tar.xz",
    ]
    assert [step.keyword for step in instructions(AWS)] == ["FROM", "ADD", "ADD", "ENV", "ENV", "ENV", "WORKDIR",
                                                             "ENTRYPOINT"]  # fmt: skip


@pytest.mark.parametrize("line", ['ENV A="open', "ENV A", "LABEL =x"])
def test_a_line_the_builder_refuses_is_an_error_naming_it(line):
    with pytest.raises(ValueError, match="line 2: "):
        settings(f"FROM scratch\n{line}\n")
