"""The benchmark's pure parts: seeded upstream generation, the baseline's Dockerfile, the report."""

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

from lambdaimages import catalog
from lambdaimages.testbed import bench, benchdata

SCALE = 0.002  # a 300 KB base layer


def test_generation_is_deterministic_and_hashes_what_it_writes(tmp_path):
    spec = benchdata.all_layer_specs(SCALE)["runtime/bench-python/x86_64"]
    first = benchdata.build_layer(spec, tmp_path / "a")
    second = benchdata.build_layer(spec, tmp_path / "b")
    assert (first.diff_id, first.digest, first.size) == (second.diff_id, second.digest, second.size)
    blob = Path(first.blob).read_bytes()
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == first.digest
    tar = gzip.decompress(blob)
    assert "sha256:" + hashlib.sha256(tar).hexdigest() == first.diff_id
    assert len(tar) == first.uncompressed


def test_layers_differ_by_key_and_hold_a_realistic_mix(tmp_path):
    specs = benchdata.all_layer_specs(SCALE)
    x86 = benchdata.build_layer(specs["base/al2023/x86_64"], tmp_path)
    arm = benchdata.build_layer(specs["base/al2023/arm64"], tmp_path)
    assert x86.diff_id != arm.diff_id
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(Path(x86.blob).read_bytes()))) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names)
        kinds = {name.split("/")[1] for name in names if name.count("/") >= 2}
        assert kinds == {"text", "elf", "packed", "data"}
        elf = next(m for m in members if m.name.endswith(".so"))
        assert tar.extractfile(elf).read(4) == b"\x7fELF"
        assert sum(1 for m in members if m.isfile()) > 20  # many small files
        assert all(m.mtime == benchdata.MTIME and m.uid == 0 for m in members)
    assert 0.8 * specs["base/al2023/x86_64"].size < x86.uncompressed < 1.5 * specs["base/al2023/x86_64"].size


def test_the_set_shares_bases_as_the_issue_asks():
    users: dict[str, set[str]] = {}
    for runtime in benchdata.RUNTIMES:
        for arch in benchdata.ARCHES:
            base = benchdata.layer_specs(runtime, arch)[0]
            users.setdefault(base.key, set()).add(runtime.name)
    assert sorted(len(v) for v in users.values()) == [2, 2, 4, 4]  # two bases, per architecture
    sizes = [rt.size for rt in benchdata.RUNTIMES]
    assert min(sizes) >= 20 * benchdata.MB and max(sizes) <= 80 * benchdata.MB
    changed = benchdata.layer_specs(bench.BY_NAME[benchdata.CHANGED], "x86_64", 2)
    before = benchdata.layer_specs(bench.BY_NAME[benchdata.CHANGED], "x86_64", 1)
    assert [a.key == b.key for a, b in zip(before, changed, strict=True)] == [True, False, True, True, True]
    assert 40 * benchdata.MB <= changed[1].size <= 60 * benchdata.MB


def test_catalog_and_baseline_dockerfile(tmp_path):
    text = bench.catalog_text("http://127.0.0.1:5999", "gzip")
    parsed = catalog.parse(text, tmp_path / "runtimes.yaml")
    assert [rt.name for rt in parsed.runtimes] == [rt.name for rt in benchdata.RUNTIMES]
    assert {rt.compression for rt in parsed.runtimes} == {"gzip"}
    config = json.loads(benchdata.image_config(benchdata.RUNTIMES[0], "x86_64", ["sha256:" + "a" * 64], 1))
    dockerfile = bench.baseline_dockerfile(config, ["a.tar.xz", "b.tar.xz"])
    lines = dockerfile.splitlines()
    assert lines[:4] == ["FROM scratch", "", "ADD a.tar.xz /", "ADD b.tar.xz /"]
    assert 'ENV LANG="en_US.UTF-8"' in lines and 'ENTRYPOINT ["/lambda-entrypoint.sh"]' in lines


def test_table_reports_ratios_and_misses():
    results = {
        "baseline": {"seconds": 100.0, "phases": {"pull": 10.0, "xz": 80.0}},
        "cold": {"seconds": 60.0, "ratio": 0.6, "met": False},
        "noop": {"seconds": 0.9, "met": True, "rebuilt": []},
        "standin_noop": {"seconds": 7.4, "limit_s": 7.0, "tags": 6, "requests": 8, "requests_target": 8,
                         "too_many": 0, "statuses": {"401": 1, "200": 7}, "first_s": 40.0, "met": False},
        "verify_noop": {"seconds": 1.2, "met": True},
        "one_change": {"seconds": 12.0, "xz_T0_layer_s": 8.0, "limit_s": 15.0, "met": True, "rebuilt": []},
        "peak_rss": {"mb": 250, "met": True},
        "export": {"seconds": 50, "mb_s": 5.0, "xz_T0_alone_mb_s": 4.0, "ratio": 1.25, "met": True},
        "gzip_cold": {"seconds": 20.0, "ratio": 0.2},
        "cold_vs_xz": {"xz_T0_alone_s": 50.0, "ratio": 1.2, "met": False},
        "verify": {"seconds": 12.0, "xz_dc_s": 10.0, "tarballs_mb": 300.0, "ratio": 1.2, "met": True},
        "inventory": {"seconds": 5.0, "xz_dc_s": 4.0, "ratio": 1.25, "met": False, "scan_cpu_s": 3.0,
                      "cold_cpu_s": 600.0, "share": 0.005, "share_met": True, "fixed_s": 1.0,
                      "ratio_above_fixed": 1.0, "scan_cpu_no_content_readers_s": 2.5},
        "check_base": {"seconds": 2.5, "images": 10, "status": 1, "met": False},
        "fresh_machine": {"seconds": 14.0, "compressed": 1, "from_branches": 40, "xz_T0_layer_s": 2.0,
                          "lfs_fetch_s": 1.5, "limit_s": 14.5, "met": True},
        "live_view": {"plain_cpu_s": 30.0, "live_cpu_s": 30.3, "extra_cpu_s": 0.3, "share_of_cold": 0.004,
                      "met": True},
        "sharded": {"shards": [{"runtimes": ["a"], "seconds": 40.0, "compressed_mb": 300.0, "taken_mb": 0.0},
                               {"runtimes": ["b"], "seconds": 12.5, "compressed_mb": 80.0, "taken_mb": 300.0}],
                    "compressed_mb": 380.0, "distinct_mb": 380.0, "met": True},
        "identical": {"tarballs_vs_xz_T0": "42/42"},
        "machine": {"cpus": 2, "memory_gb": 24, "xz": "xz 5.4.1", "engine": "20.10", "loadavg_at_start": [0],
                    "loadavg_at_end": [0]},
    }  # fmt: skip
    text = bench.table(results)
    cold = next(line for line in text.splitlines() if line.startswith("(a) cold"))
    assert "0.6" in cold and cold.endswith("NO")
    assert "tarballs_vs_xz_T0 42/42" in text
    versus_xz = next(line for line in text.splitlines() if line.startswith("(a) cold vs xz"))
    assert "1.2" in versus_xz and versus_xz.endswith("NO")
    standin = next(line for line in text.splitlines() if line.startswith("(b) no-op resolve, stand-in"))
    assert "7.4 s, 8 requests (0 x 429)" in standin and "<= 8 requests, <= 7.0 s" in standin
    assert standin.endswith("NO")
    verify_noop = next(line for line in text.splitlines() if line.startswith("(f) verify, no-op"))
    assert "1.2 s" in verify_noop and "<= 3 s" in verify_noop and verify_noop.endswith("yes")
    verify = next(line for line in text.splitlines() if line.startswith("(f) verify, offline"))
    assert "1.2" in verify and verify.endswith("yes")
    inventory = next(line for line in text.splitlines() if line.startswith("(g) inventory, from"))
    assert "1.25" in inventory and inventory.endswith("NO")
    assert next(line for line in text.splitlines() if line.startswith("live view")).endswith("yes")
    check_base = next(line for line in text.splitlines() if line.startswith("(j) check_base, 10 images"))
    assert "2.5 s (exit 1)" in check_base and check_base.endswith("NO")
    fresh = next(line for line in text.splitlines() if line.startswith("(h) fresh machine"))
    assert "14.0 s (1 compressed, 40 from branches)" in fresh and "git lfs fetch of the rest 1.5 s" in fresh
    assert "= 14.5 s" in fresh and fresh.endswith("yes")
    sharded = next(line for line in text.splitlines() if line.startswith("(i) two shards"))
    assert "compressed 380.0 MB in all (shard 1 40.0 s, shard 2 12.5 s)" in sharded
    assert "distinct layers 380.0 MB" in sharded and sharded.endswith("yes")
