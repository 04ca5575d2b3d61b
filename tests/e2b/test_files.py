"""Filesystem operations through the e2b SDK."""

import os
import stat

import pytest
from e2b.exceptions import InvalidArgumentException, NotFoundException, SandboxException


def test_write_read_list_exists(sandbox, workdir):
    info = sandbox.files.write(f"{workdir}/a/b/hello.txt", "hello world")
    assert (info.name, info.path) == ("hello.txt", f"{workdir}/a/b/hello.txt")
    assert sandbox.files.read(f"{workdir}/a/b/hello.txt") == "hello world"
    assert sandbox.files.read(f"{workdir}/a/b/hello.txt", format="bytes") == bytearray(b"hello world")
    assert sandbox.files.exists(f"{workdir}/a/b/hello.txt")
    assert not sandbox.files.exists(f"{workdir}/nope")

    top = sandbox.files.list(str(workdir))
    assert [(e.name, e.type.value) for e in top] == [("a", "dir")]
    deep = sandbox.files.list(str(workdir), depth=3)
    assert [e.path for e in deep] == [f"{workdir}/a", f"{workdir}/a/b", f"{workdir}/a/b/hello.txt"]


def test_write_many_files_in_one_multipart_upload(sandbox, workdir):
    from e2b.sandbox.filesystem.filesystem import WriteEntry

    infos = sandbox.files.write_files(
        [WriteEntry(path=f"{workdir}/m/{i}.txt", data=f"file {i}") for i in range(5)], use_octet_stream=False
    )
    assert sorted(i.name for i in infos) == [f"{i}.txt" for i in range(5)]
    assert sandbox.files.read(f"{workdir}/m/3.txt") == "file 3"


def test_make_dir_rename_remove_get_info(sandbox, workdir):
    assert sandbox.files.make_dir(f"{workdir}/x/y") is True
    assert sandbox.files.make_dir(f"{workdir}/x/y") is False
    sandbox.files.write(f"{workdir}/x/y/f", "12345")
    info = sandbox.files.get_info(f"{workdir}/x/y/f")
    assert (info.size, info.type.value, info.owner) == (5, "file", "root")
    assert info.permissions == "-rw-r--r--"
    moved = sandbox.files.rename(f"{workdir}/x/y/f", f"{workdir}/z/g")
    assert moved.path == f"{workdir}/z/g"
    assert not sandbox.files.exists(f"{workdir}/x/y/f")
    sandbox.files.remove(f"{workdir}/x")
    assert not sandbox.files.exists(f"{workdir}/x")
    # Removing what is not there is not an error (as with E2B's envd).
    sandbox.files.remove(f"{workdir}/x")


def test_symlinks_are_described_by_their_target(sandbox, workdir):
    os.mkdir(workdir / "real")
    os.symlink(workdir / "real", workdir / "link")
    info = sandbox.files.get_info(f"{workdir}/link")
    # envd reports the target's type and marks the link; the SDK shows SYMLINK.
    assert info.type.value == "symlink"
    assert info.symlink_target == f"{workdir}/real"
    assert info.permissions.startswith("L")
    listed = {e.name: e for e in sandbox.files.list(str(workdir))}
    assert listed["real"].type.value == "dir"
    assert listed["link"].symlink_target == f"{workdir}/real"


def test_files_are_owned_by_the_user(sandbox, workdir):
    sandbox.files.write(f"{workdir}/mine/n.txt", "x", user="nobody")
    st = os.stat(workdir / "mine" / "n.txt")
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (65534, 0o644)
    assert os.stat(workdir / "mine").st_uid == 65534
    assert sandbox.files.get_info(f"{workdir}/mine/n.txt").owner == "nobody"


def test_metadata_is_stored_as_xattrs(sandbox, workdir):
    info = sandbox.files.write(f"{workdir}/meta.txt", "x", metadata={"Owner-Team": "blue"})
    assert info.metadata == {"owner-team": "blue"}
    assert sandbox.files.get_info(f"{workdir}/meta.txt").metadata == {"owner-team": "blue"}


def test_bad_paths_get_clear_errors(sandbox, workdir):
    with pytest.raises(NotFoundException):
        sandbox.files.read(f"{workdir}/missing")
    with pytest.raises(NotFoundException):
        sandbox.files.get_info(f"{workdir}/missing")
    with pytest.raises(NotFoundException):
        sandbox.files.list(f"{workdir}/missing")
    sandbox.files.write(f"{workdir}/plain", "x")
    with pytest.raises(InvalidArgumentException, match="not a directory"):
        sandbox.files.list(f"{workdir}/plain")
    with pytest.raises(InvalidArgumentException):
        sandbox.files.read(str(workdir))
    with pytest.raises(InvalidArgumentException):
        sandbox.files.make_dir(f"{workdir}/plain")


def test_non_regular_files_are_refused_without_hanging(sandbox, workdir):
    os.mkfifo(workdir / "fifo")
    for path in ["/dev/zero", "/dev/urandom", f"{workdir}/fifo"]:
        with pytest.raises(SandboxException, match="not a regular file"):
            sandbox.files.read(path, request_timeout=10)


def test_relative_paths_use_the_default_workdir(sandbox, envd, workdir):
    import httpx

    httpx.post(f"{envd.url}/init", json={"defaultWorkdir": str(workdir)}).raise_for_status()
    sandbox.files.write("rel/x.txt", "in workdir")
    assert (workdir / "rel" / "x.txt").read_text() == "in workdir"
    assert sandbox.commands.run("pwd").stdout.strip() == str(workdir)
