"""Class 5 of docs/reliability.md: a broken state database never breaks a command.

The state of a production can be derived from its files (desispec's ``sync``),
so a database that is garbage, truncated, text, empty, another program's SQLite
file, of the wrong schema or with unreadable rows is detected, moved aside
(``state.sqlite3.corrupt-*``) and rebuilt from the products on disk by the next
``gpuspec-run`` (which says so); ``gpuspec status``/``tasks`` show the state
derived from the files with a note; ``retry`` works. A database that cannot be
written is a one-line error (see test_reliability_faults for a full disk).
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import sqlite3

import pytest

import reliability_world as W


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A finished toy production (with one failure) to break, and its products."""
    from gpuspec.launch.toy import make_toy_inputs, toy_manifest_text

    t = tmp_path_factory.mktemp("state")
    inputs = make_toy_inputs(str(t / "in"))
    m = t / "m.yaml"
    m.write_text(toy_manifest_text(inputs, str(t / "prod"),
                                   fail_tasks=["extract-r1-00000002-b00-01"]))
    rc, _, err = W.run_gpuspec([m, "-q"], prog="gpuspec-run")
    assert rc == 1, err
    return dict(root=t, manifest=str(m), prod=str(t / "prod"), inputs=inputs,
                products=_products(str(t / "prod")))


def _products(prod):
    out = {}
    for p in glob.glob(os.path.join(prod, "**", "*.json"), recursive=True):
        rel = os.path.relpath(p, prod)
        if not rel.startswith("run"):
            out[rel] = (hashlib.sha256(open(p, "rb").read()).hexdigest(), os.stat(p).st_mtime_ns)
    return out


def _copy(done, tmp_path):
    """The finished production copied (products with their times) with its manifest."""
    prod = tmp_path / "prod"
    shutil.copytree(done["prod"], prod, copy_function=shutil.copy2)
    text = open(done["manifest"]).read().replace(done["prod"], str(prod))
    m = tmp_path / "m.yaml"
    m.write_text(text)
    (prod / "run" / "manifest-path").write_text(str(m) + "\n")
    return str(m), str(prod), str(prod / "run" / "state.sqlite3")


def _garbage(db):
    with open(db, "wb") as f:
        f.write(os.urandom(8192))


def _text(db):
    with open(db, "w") as f:
        f.write("this is not a database\n" * 50)


def _truncated(db):
    data = open(db, "rb").read()
    with open(db, "wb") as f:
        f.write(data[: len(data) // 3])


def _empty(db):
    open(db, "wb").close()


def _header_only(db):
    data = open(db, "rb").read()
    with open(db, "wb") as f:
        f.write(data[:100])


def _zeroed_pages(db):
    data = bytearray(open(db, "rb").read())
    data[4096:] = b"\0" * (len(data) - 4096)
    with open(db, "wb") as f:
        f.write(bytes(data))


def _foreign(db):
    os.remove(db)
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE photos (id INTEGER, path TEXT)")
    con.commit()
    con.close()


def _wrong_schema(db):
    os.remove(db)
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE tasks (name TEXT, colour TEXT)")
    con.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    con.commit()
    con.close()


def _bad_json(db):
    con = sqlite3.connect(db)
    con.execute("UPDATE tasks SET deps = '[not json' WHERE rowid = 3")
    con.execute("UPDATE meta SET value = '{broken' WHERE key = 'manifest_path'")
    con.commit()
    con.close()


def _bad_state(db):
    con = sqlite3.connect(db)
    con.execute("UPDATE tasks SET state = 'exploded' WHERE rowid = 2")
    con.commit()
    con.close()


BREAKS = {"garbage": _garbage, "text": _text, "truncated": _truncated, "empty-file": _empty,
          "header-only": _header_only, "zeroed-pages": _zeroed_pages, "foreign-sqlite": _foreign,
          "wrong-schema": _wrong_schema, "unreadable-rows": _bad_json,
          "unknown-state": _bad_state}


@pytest.mark.parametrize("kind", sorted(BREAKS))
def test_broken_database(kind, done, tmp_path):
    m, prod, db = _copy(done, tmp_path)
    BREAKS[kind](db)
    # status and tasks: the state derived from the files (or one clear line), never a traceback
    for argv in (["status", prod, "--once"], ["tasks", prod], ["tasks", prod, "--state", "done"],
                 ["status", m, "--once"]):
        rc, out, err = W.run_gpuspec(argv)
        assert "Traceback" not in err and "internal error" not in err, err
        if kind != "empty-file":
            assert rc == 0, err
            assert "derived from the products on disk" in err or "corrupt" in err, err
    rc, out, err = W.run_gpuspec(["status", prod, "--once"])
    if rc == 0 and kind not in ("empty-file",):
        assert "total" in out
    # the run: detects, moves aside, rebuilds, says so; done tasks are not redone
    rc, out, err = W.run_gpuspec([m, "-q"], prog="gpuspec-run")
    assert "Traceback" not in err, err
    assert rc == 1, err  # the failure of the manifest is tried again (and fails again)
    if kind != "empty-file":
        assert "corrupt" in err and "rebuilt" in err, err
        assert glob.glob(db + ".corrupt-*"), os.listdir(os.path.dirname(db))
    assert _products(prod) == done["products"]  # nothing redone, nothing changed
    con = sqlite3.connect(db)
    states = dict(con.execute("SELECT name, state FROM tasks"))
    con.close()
    assert {n for n, s in states.items() if s != "done"} == \
        {n for n, s in _states(done["prod"]).items() if s != "done"}
    # and every command works again
    assert W.run_gpuspec(["status", prod, "--once"])[0] == 0
    assert W.run_gpuspec(["tasks", prod, "--state", "failed"])[0] == 0


def _states(prod):
    con = sqlite3.connect(os.path.join(prod, "run", "state.sqlite3"))
    try:
        return dict(con.execute("SELECT name, state FROM tasks"))
    finally:
        con.close()


def test_broken_database_without_a_manifest_to_rebuild_from(done, tmp_path):
    """No manifest known: status names the problem and the way out, exit 1."""
    m, prod, db = _copy(done, tmp_path)
    os.remove(os.path.join(prod, "run", "manifest-path"))
    _garbage(db)
    rc, out, err = W.run_gpuspec(["status", prod, "--once"])
    W.check_error(rc, err, 1, ["corrupt", "gpuspec-run MANIFEST"])


def test_retry_with_a_broken_database(done, tmp_path):
    m, prod, db = _copy(done, tmp_path)
    _text(db)
    text = open(m).read().replace("- extract-r1-00000002-b00-01", "[]").replace(
        "fail_tasks:\n", "fail_tasks: ")
    open(m, "w").write(text)
    rc, out, err = W.run_gpuspec(["retry", prod, "extract-r1-00000002-b00-01"])
    assert "Traceback" not in err
    assert rc == 0, err
    assert _states(prod)["extract-r1-00000002-b00-01"] == "done"
    assert glob.glob(db + ".corrupt-*")


def test_database_moved_aside_is_kept(done, tmp_path):
    """The broken file is never deleted: moved aside, named in the warning."""
    m, prod, db = _copy(done, tmp_path)
    _garbage(db)
    before = open(db, "rb").read()
    rc, out, err = W.run_gpuspec([m, "-q"], prog="gpuspec-run")
    aside = glob.glob(db + ".corrupt-*")
    assert len(aside) == 1 and open(aside[0], "rb").read() == before
    assert aside[0] in err


_KILLED_IN_COMMIT = """
import os, sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("PRAGMA cache_size = 1")  # pages spill to the file before the commit
con.execute("BEGIN")
con.execute("CREATE TABLE scratch (x)")  # page 1 goes into the journal
con.execute("UPDATE tasks SET state = 'failed', error = 'half-written'")
con.executemany("INSERT INTO meta VALUES (?, '0')", [(f"k{i}",) for i in range(3000)])
os._exit(9)  # killed inside the transaction: a hot journal is left
"""


def test_database_with_a_hot_journal(done, tmp_path):
    """A rank 0 killed inside a commit (SIGKILL at a batch time limit) leaves a hot
    journal; status and tasks roll it back like any SQLite reader and show the state
    from before the interrupted write."""
    import subprocess
    import sys

    m, prod, db = _copy(done, tmp_path)
    before = _states(prod)
    subprocess.run([sys.executable, "-c", _KILLED_IN_COMMIT, db], check=False)
    assert os.path.getsize(db + "-journal") > 0
    for argv in (["status", prod, "--once"], ["tasks", prod, "--state", "failed"]):
        rc, out, err = W.run_gpuspec(argv)
        assert rc == 0 and "Traceback" not in err, err
        assert "corrupt" not in err and "derived" not in err, err
    assert not os.path.exists(db + "-journal")
    assert _states(prod) == before
