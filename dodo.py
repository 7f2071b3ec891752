"""doit tasks: catalog -> upstream state -> layer tarballs -> Dockerfiles -> images.

`doit` snapshots and builds every runtime; `doit list` shows every task. Variables:
`doit catalog=FILE out=DIR ...` (defaults: runtimes.yaml, build).
"""

import sys
from pathlib import Path

from doit import get_var
from doit.tools import config_changed

from lambdaimages import catalog as catalog_module
from lambdaimages import layout
from lambdaimages.errors import ProjectError
from lambdaimages.inventory import images as inventories
from lambdaimages.publish import branches
from lambdaimages.snapshot import render
from lambdaimages.tasks import actions, commands, database, uptodate
from lambdaimages.tasks.reporter import Reporter
from lambdaimages.testbed import demo  # the demo task's test bed; the product never imports it
from lambdaimages.tools import files

CATALOG_FILE = get_var("catalog", "runtimes.yaml")
OUT = layout.output_folder(get_var("out", "build"))  # one absolute path: two spellings of a folder are one folder
READ_ONLY = commands.read_only(sys.argv)  # `doit list`, `info`, `help`: no lock on the folder, nothing written
if READ_ONLY:
    commands.quiet_on_closed_pipe()  # `doit list --all | head`
# strict=1: a resolve that cannot reach upstream fails, instead of going on from the snapshot on disk.
STRICT = get_var("strict", "0") not in ("0", "", "no", "false")

try:
    CATALOG = catalog_module.load(CATALOG_FILE)
    CACHE = actions.registry_cache(get_var("cache", None), CATALOG)  # the registry layer cache shared by machines
    LOCK = None if READ_ONLY else files.hold_output(OUT)
except ProjectError as exc:
    sys.exit(f"error: {exc}")
database.atomic_doit_db()  # a full disk or a kill while doit saves .doit.json must not corrupt it

DOIT_CONFIG = {
    # Each runtime's build by name (not the "build" group): doit then starts a runtime's build as soon as its
    # snapshot is done, overlapping the next runtimes' compression, instead of building all at the end.
    "default_tasks": [f"build:{rt.name}" for rt in CATALOG.runtimes],
    "backend": "json",
    "dep_file": str(OUT / ".doit.json"),
    # Quiet: each task's output goes to <out>/.logs/<task>.log and its live status to the console (`-v 2` streams).
    "verbosity": 0,
    "continue": True,
    "reporter": Reporter.logging_to(OUT),
    # Two tasks at a time (threads): a build or a download overlaps another runtime's compression.
    # Compression itself is bounded by one pool of xz threads per process (lambdaimages.tools.xzblocks).
    "num_process": 2,
    "par_type": "thread",
}
# doit's capture swaps the process-wide sys.stdout/stderr per task, which from two threads at once crashed Python
# (SIGSEGV in 5 of 8 runs of 14 runtimes, none without). Tasks write through lambdaimages.output instead: a log
# per task and a status line on the console, with no stream swapped.
SHOWN = {"io": {"capture": False}}
TEMPLATES = sorted(str(p) for p in render.TEMPLATES.glob("*.j2"))


def task_resolve():
    """Poll upstream: resolve each runtime's tag to manifest, config and layers (always runs)."""
    for rt in CATALOG.runtimes:
        yield {
            "name": rt.name,
            "actions": [(actions.resolve_runtime, [OUT, rt, STRICT])],
            "targets": actions.state_files(OUT, rt),
            "uptodate": [False],
            **SHOWN,
        }


def task_export():
    """Export each layer as <out>/<rt>/<arch>/<diff_id>.tar.xz, compressed once or taken from `cache=URL` or `repo=`."""
    repo = branches.target_repo(get_var("repo", None), CATALOG)  # published tarballs are taken, not compressed
    for rt in CATALOG.runtimes:
        yield {
            "name": rt.name,
            "actions": [(actions.export_runtime, [OUT, rt, repo, CACHE])],
            "file_dep": actions.state_files(OUT, rt),
            "uptodate": [uptodate.SnapshotUnchanged(OUT, rt), config_changed(actions.export_settings(rt))],
            **SHOWN,
        }


def task_render():
    """Render <out>/<rt>/Dockerfile.<rt> and <out>/<rt>/<arch>/Dockerfile.<rt> from templates/."""
    for rt in CATALOG.runtimes:
        yield {
            "name": rt.name,
            "actions": [(actions.render_runtime, [OUT, rt])],
            "file_dep": actions.state_files(OUT, rt) + TEMPLATES,
            # After a failed export the snapshot keeps its old Dockerfiles, which match its old tarballs.
            "task_dep": [f"export:{rt.name}"],
            "targets": [str(p) for p in render.dockerfile_outputs(rt, OUT)],
            "uptodate": [config_changed(actions.render_settings(rt))],
            **SHOWN,
        }


def task_inventory():
    """Inventory each image as <out>/<rt>/<arch>/sbom.cdx.json (CycloneDX): packages, runtime, files no rpm owns."""
    for rt in CATALOG.runtimes:
        yield {
            "name": rt.name,
            "actions": [(actions.inventory_runtime, [OUT, rt, sys.argv])],
            "file_dep": actions.state_files(OUT, rt),
            "task_dep": [f"export:{rt.name}"],
            "targets": actions.sbom_files(OUT, rt),
            "uptodate": [config_changed({"facts": inventories.FORMAT, "sbom": inventories.SBOM_FORMAT})],
            **SHOWN,
        }


def task_snapshot():
    """Snapshot a runtime: resolve, export, render and inventory (`doit snapshot:<rt>`)."""
    for rt in CATALOG.runtimes:
        yield {
            "name": rt.name,
            "actions": None,
            "task_dep": [f"resolve:{rt.name}", f"export:{rt.name}", f"render:{rt.name}", f"inventory:{rt.name}"],
            "clean": [(actions.clean_snapshot, [OUT, rt])],
        }


def task_load():
    """Load each architecture as <rt>:<arch> from upstream's config and the tarballs: image ID = upstream's."""
    for rt in CATALOG.runtimes:
        yield {
            "name": rt.name,
            "actions": [(actions.load_runtime, [OUT, rt])],
            "task_dep": [f"snapshot:{rt.name}"],
            "uptodate": [uptodate.ImagesLoaded(OUT, rt)],
            **SHOWN,
        }


def task_build():
    """Build <rt>:local from <out>/<rt> with the Docker engine, and load <rt>:<arch> (`doit build:<rt>`)."""
    for rt in CATALOG.runtimes:
        yield {
            "name": rt.name,
            "actions": [(actions.build_runtime, [OUT, rt])],
            "task_dep": [f"snapshot:{rt.name}", f"load:{rt.name}"],
            "uptodate": [uptodate.ImageCurrent(OUT, rt), uptodate.BuildRecorded(OUT, rt)],
            "clean": [(actions.clean_image, [OUT, rt])],
            **SHOWN,
        }


def task_demo():
    """Run the whole pipeline offline: sample images behind a public.ecr.aws stand-in -> snapshot, build, verify."""
    return {
        "actions": [(actions.one_line_errors(demo.run_task), [Path(get_var("demo_out", "build-demo"))])],
        "uptodate": [False],
        "meta": {"foreground": True},  # its inner doit run draws the console itself
        **SHOWN,
    }


def task_publish():
    """Commit each changed snapshot to its branch (tarballs in Git LFS), force-push it (`doit publish repo=...`)."""
    repo = branches.target_repo(get_var("repo", None), CATALOG)
    for rt in CATALOG.runtimes:
        yield {
            "name": rt.name,
            "actions": [(actions.publish_runtime, [OUT, rt, repo])],
            "task_dep": [f"snapshot:{rt.name}"],
            "uptodate": [False],
            "clean": [(actions.clean_private, [OUT, rt])],
            **SHOWN,
        }


def task_push():
    """Push every architecture, its SBOM as a referrer, then an index (`doit push:<rt> to=HOST[:PORT]/REPO[:TAG]`)."""
    to, sbom = get_var("to", None), get_var("sbom", "1")
    for rt in CATALOG.runtimes:
        yield {
            "name": rt.name,
            "actions": [(actions.push_runtime, [OUT, CATALOG, rt, to, sys.argv, sbom])],
            "task_dep": [f"snapshot:{rt.name}"],
            "uptodate": [False],
            **SHOWN,
        }


def task_changes():
    """Print what changed upstream since the published branch or the previous snapshot (`doit changes:<rt>`)."""
    repo = branches.target_repo(get_var("repo", None), CATALOG)
    for rt in CATALOG.runtimes:
        yield {
            "name": rt.name,
            "actions": [(actions.print_changes, [OUT, rt, repo])],
            "task_dep": [f"snapshot:{rt.name}"],
            "uptodate": [False],
            **SHOWN,
        }


def task_check_base():
    """Name the snapshot each image is built on, and what changed since (`doit check_base image=NAME archive=FILE`)."""
    repo = branches.target_repo(get_var("repo", None), CATALOG)  # its published branches are bases too
    return {
        "actions": [(actions.check_base, [OUT, CATALOG, repo, sys.argv])],
        "uptodate": [False],
        **SHOWN,
    }


def task_verify_branch():
    """Prove a branch clone is upstream's image (`clone=PATH`; AWS's layout: `manifest=sha256:...` or `image=REF`)."""
    return {
        "actions": [
            (actions.verify_branch, [OUT, get_var("clone", None), get_var("manifest", None), get_var("image", None)])
        ],
        "uptodate": [False],
        **SHOWN,
    }


def task_verify():
    """Prove, offline, each image is upstream's and answers an invocation; table and reports (`doit verify:<rt>`)."""
    # Alone it asks no registry and changes no snapshot; with pipeline tasks on the command line it runs after them.
    after = actions.requested_with_pipeline(sys.argv)
    for rt in CATALOG.runtimes:
        yield {
            "name": rt.name,
            "actions": [(actions.verify_runtime, [OUT, CATALOG, rt])],
            "task_dep": [f"build:{rt.name}"] if after else [],
            "uptodate": [uptodate.VerificationCurrent(OUT, rt)],
            "teardown": [(actions.verify_report, [OUT, CATALOG])],
            "clean": [(actions.clean_verification, [OUT, rt])],
            **SHOWN,
        }
    # The table and reports, written once after every other task of the run (also after failed ones), also when
    # every runtime was up to date. ("_" starts no runtime name.)
    yield {
        "name": "_report",
        "actions": None,
        "uptodate": [False],
        "teardown": [(actions.verify_report, [OUT, CATALOG])],
        **SHOWN,
    }
