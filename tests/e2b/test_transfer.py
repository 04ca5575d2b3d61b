"""Large uploads and downloads, checksummed, streamed both ways."""

import hashlib
import io
import os

SIZE = 64 * 1024 * 1024


def _payload(path):
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(SIZE // (1 << 20)):
            chunk = os.urandom(1 << 20)
            h.update(chunk)
            f.write(chunk)
    return h.hexdigest()


def test_large_upload_and_download(sandbox, workdir, tmp_path):
    src = tmp_path / "src.bin"
    digest = _payload(src)
    with open(src, "rb") as f:
        sandbox.files.write(f"{workdir}/big.bin", f)
    assert hashlib.sha256((workdir / "big.bin").read_bytes()).hexdigest() == digest

    h = hashlib.sha256()
    total = 0
    for chunk in sandbox.files.read(f"{workdir}/big.bin", format="stream"):
        h.update(chunk)
        total += len(chunk)
    assert (total, h.hexdigest()) == (SIZE, digest)


def test_gzip_both_ways(sandbox, workdir):
    data = b"compress me " * 100_000
    sandbox.files.write(f"{workdir}/z.txt", io.BytesIO(data), gzip=True)
    assert (workdir / "z.txt").read_bytes() == data
    assert bytes(sandbox.files.read(f"{workdir}/z.txt", format="bytes", gzip=True)) == data


def test_failed_upload_leaves_no_torn_file(sandbox, envd, workdir):
    import httpx

    (workdir / "keep.txt").write_text("original")
    # A gzip body that breaks half way: the upload fails, the old file stays.
    import gzip

    broken = gzip.compress(b"new content" * 10000)[:200]
    r = httpx.post(
        f"{envd.url}/files",
        params={"path": f"{workdir}/keep.txt"},
        content=broken,
        headers={"Content-Type": "application/octet-stream", "Content-Encoding": "gzip"},
    )
    assert r.status_code == 400, r.text
    assert (workdir / "keep.txt").read_text() == "original"
    assert sorted(os.listdir(workdir)) == ["keep.txt"]
