"""Language and dpkg packages read from layer tars, against pip/importlib.metadata, npm ls, Ruby and dpkg-query."""

import importlib.metadata
import json
from pathlib import Path

from inventory_samples import feed, gem_specifications, make_jar, npm_ls_packages, npm_tree, pip_tree, run, tar_of

from lambdaimages.inventory import dpkg, languages


def _packages(facts, kind):
    return [p for found in facts.packages.values() for p in found if p.kind == kind]


def test_python_distributions_match_importlib_metadata():
    target = pip_tree()
    facts = feed(tar_of({"var/runtime": target}))
    expected = {(d.metadata["Name"], d.version) for d in importlib.metadata.distributions(path=[str(target)])}
    assert {(p.name, p.version) for p in _packages(facts, "pypi")} == expected
    assert ("eggy", "0.3") in expected and ("six", "1.17.0") in expected
    six = next(p for p in _packages(facts, "pypi") if p.name == "six")
    assert six.path == "var/runtime/six-1.17.0.dist-info" and six.license == "MIT"
    assert facts.notes == {}


def test_npm_packages_match_npm_ls():
    target, listing = npm_tree()
    facts = feed(tar_of({"var/runtime/node_modules": target / "node_modules"}))
    found = {(p.name, p.version) for p in _packages(facts, "npm")}
    assert found == npm_ls_packages(listing)
    assert ("is-number", "6.0.0") in found and ("is-number", "7.0.0") in found  # one nested below is-odd
    assert any(p.name == "@types/ms" and p.license == "MIT" for p in _packages(facts, "npm"))


def test_gemspecs_match_ruby():
    specs = gem_specifications()
    files = sorted(specs.glob("*.gemspec"))
    assert files
    script = (
        'ARGV.each { |f| s = Gem::Specification.load(f); puts [s.name, s.version, s.licenses.join(" OR ")].join("\t") }'
    )
    expected = {tuple(line.split("\t")) for line in run("ruby", "-e", script, *files).splitlines()}
    facts = feed(tar_of({"var/lang/lib/ruby/gems/3.2.0/specifications/default": specs}))
    assert {(p.name, p.version, p.license) for p in _packages(facts, "gem")} == expected


def test_maven_artifacts_of_a_jar(tmp_path):
    jar = tmp_path / "core.jar"
    make_jar(jar, {"groupId": "com.amazonaws", "artifactId": "aws-lambda-java-core", "version": "1.2.3"})
    facts = feed(tar_of({"var/runtime/lib/aws-lambda-java-core-1.2.3.jar": jar}))
    [artifact] = _packages(facts, "maven")
    assert (artifact.group, artifact.name, artifact.version) == ("com.amazonaws", "aws-lambda-java-core", "1.2.3")
    assert run("unzip", "-p", jar, "META-INF/maven/com.amazonaws/aws-lambda-java-core/pom.properties").count("=") == 3


def test_dpkg_status_matches_dpkg_query():
    status = Path("/var/lib/dpkg/status")
    expected = run("dpkg-query", "-W", "-f", "${db:Status-Status} ${Package} ${Version} ${Architecture}\\n")
    installed = {tuple(line.split()[1:]) for line in expected.splitlines() if line.startswith("installed ")}
    facts = feed(tar_of({"var/lib/dpkg/status": status}))
    found = {(p.name, p.version, p.arch) for p in _packages(facts, "deb")}
    assert found == installed and len(found) > 50
    assert dpkg.status_packages("Package: x\nVersion: 1\nStatus: deinstall ok config-files\n") == []


def test_bad_metadata_keeps_what_could_be_read():
    facts = feed(
        tar_of(
            {
                "node_modules/broken/package.json": b"{not json",
                "node_modules/listed/package.json": b"[1, 2]",
                "node_modules/noversion/package.json": b'{"name": "noversion"}',
                "site-packages/nover-2.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: nover\n\n",
                "site-packages/bare.dist-info/METADATA": b"",
                "specifications/none.gemspec": b"garbage",
                "x/not-a-zip.jar": b"just text",
            }
        )
    )
    notes = {path: " ".join(found) for path, found in facts.notes.items()}
    assert "not JSON" in notes["node_modules/broken/package.json"]
    assert "not a JSON object" in notes["node_modules/listed/package.json"]
    assert "no version" in notes["node_modules/noversion/package.json"]
    assert "no Version: '2.1' taken from the directory name" in notes["site-packages/nover-2.1.dist-info/METADATA"]
    assert "no gem name" in notes["specifications/none.gemspec"]
    assert "not a readable jar" in notes["x/not-a-zip.jar"]
    assert {(p.name, p.version) for p in _packages(facts, "pypi")} == {("nover", "2.1"), ("bare", "")}
    assert [p.name for p in _packages(facts, "npm")] == ["noversion"]


def test_npm_license_forms():
    for manifest, expected in (
        ({"license": "MIT"}, "MIT"),
        ({"license": {"type": "ISC"}}, "ISC"),
        ({"licenses": [{"type": "MIT"}, {"type": "Apache-2.0"}]}, "MIT OR Apache-2.0"),
        ({}, ""),
    ):
        data = json.dumps({"name": "x", "version": "1.0.0", **manifest}).encode()
        [package], _ = languages.npm_package("node_modules/x/package.json", data)
        assert package.license == expected
