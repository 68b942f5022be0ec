#!/usr/bin/env python3
"""Regenerates the seed corpora in fuzz/corpus/ (a few small valid inputs per target).

usage: fuzz/make_corpus.py LOCKBENCH_BINARY REPORT_JSON

LOCKBENCH_BINARY: target/debug/lockbench (its `gen` writes the gzip and zstd layers and a real image
layout); REPORT_JSON: a store report from `lockbench run` (e.g. OUT/staged.store.json), cut down to
two locks.
"""
import hashlib
import io
import json
import pathlib
import subprocess
import sys
import tarfile
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
CORPUS = HERE / "corpus"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def gen_layout(lockbench, out, compression, seed):
    subprocess.run(
        [lockbench, "gen", "--out", out, "--images", "1", "--layers", "1", "--layer-size", "2K",
         "--files-per-layer", "2", "--compression", compression, "--seed", str(seed)],
        check=True, stdout=subprocess.DEVNULL)
    layout = pathlib.Path(out) / "img-00"
    blob = lambda d: (layout / "blobs/sha256" / d.split(":")[1]).read_bytes()
    index = (layout / "index.json").read_bytes()
    manifest = blob(json.loads(index)["manifests"][0]["digest"])
    parsed = json.loads(manifest)
    return index, manifest, blob(parsed["config"]["digest"]), blob(parsed["layers"][0]["digest"])


def entry_types_tar():
    """One of each entry kind store-core handles, PAX format (long name, xattr, owner)."""
    buf = io.BytesIO()
    tarfile.RECORDSIZE = 2 * tarfile.BLOCKSIZE  # no padding to 10 KiB: seeds stay small
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        def add(name, kind, data=b"", **kw):
            info = tarfile.TarInfo(name)
            info.type, info.mtime, info.mode = kind, 1704067200, kw.pop("mode", 0o755)
            info.uid = info.gid = 0
            for k, v in kw.items():
                setattr(info, k, v)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data) if data else None)
        add("etc", tarfile.DIRTYPE)
        add("etc/hostname", tarfile.REGTYPE, b"fuzz\n", mode=0o644, uid=1000, gid=1000)
        add("etc/link", tarfile.SYMTYPE, linkname="hostname")
        add("etc/hard", tarfile.LNKTYPE, linkname="etc/hostname", mode=0o644)
        add("etc/.wh.removed", tarfile.REGTYPE, mode=0o644)
        add("d" * 40 + "/" + "n" * 90, tarfile.REGTYPE, b"x", mode=0o600,
            pax_headers={"SCHILY.xattr.user.fuzz": "1"})
    return buf.getvalue()


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    lockbench, report = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as tmp:
        index, manifest, config, gz = gen_layout(lockbench, f"{tmp}/gz", "gzip", 3)
        *_, zst = gen_layout(lockbench, f"{tmp}/zst", "zstd", 4)
    write("tar_apply", "gzip-layer", gz)
    write("tar_apply", "zstd-layer", zst)
    write("tar_apply", "entry-types", entry_types_tar())

    # oci_parse: index NUL manifest NUL config NUL reference, with the target's placeholders.
    media = "application/vnd.oci.image"
    def layout(index_refs, layers, reference):
        idx = {"schemaVersion": 2, "manifests": [
            {"mediaType": f"{media}.manifest.v1+json", "digest": "@MANIFEST@", "size": 0,
             "annotations": {"org.opencontainers.image.ref.name": r}} for r in index_refs]}
        man = {"schemaVersion": 2,
               "config": {"mediaType": f"{media}.config.v1+json", "digest": "@CONFIG@", "size": 0},
               "layers": [{"mediaType": f"{media}.layer.v1.tar", "digest": "@LAYER@", "size": 0}]
               * layers}
        cfg = {"os": "linux", "rootfs": {"type": "layers", "diff_ids": ["@DIFF_ID@"] * layers}}
        text = "\0".join(json.dumps(x, separators=(",", ":")) for x in (idx, man, cfg))
        for key in ("MANIFEST", "CONFIG", "LAYER"):
            text = text.replace(f'"@{key}@","size":0', f'"@{key}@","size":@{key}_SIZE@')
        return (text + "\0" + reference).encode()
    write("oci_parse", "one-layer", layout(["latest"], 1, "latest"))
    write("oci_parse", "two-tags", layout(["v1", "v2"], 2, "v2"))
    write("oci_parse", "no-layers", layout(["latest"], 0, ""))
    write("oci_parse", "lockbench-gen", b"\0".join([index, manifest, config, b"latest"]))

    full = json.loads(pathlib.Path(report).read_text())
    full["locks"] = [l for l in full["locks"] if l["key"]["name"].endswith(("layers.lock", "images.lock"))]
    write("report_load", "store-report", json.dumps(full, separators=(",", ":")).encode())
    full["locks"] = full["locks"][-1:]
    write("report_load", "one-lock", json.dumps(full, separators=(",", ":")).encode())

    write("budget_parse", "ci-budgets", (HERE.parent / ".ci/budgets.toml").read_bytes())
    write("budget_parse", "structured", b'[[budget]]\nlock = "overlay-layers/*.lock"\nmode = "write"\n'
          b'metric = "hold"\nstat = "p99"\nop = "<="\nlimit = "1.5ms"\n\n[[budget]]\n'
          b'lock = "layers.lock"\nmetric = "wait"\nstat = "count"\nop = ">="\nlimit = 12\n')
    write("budget_parse", "expr", b"images.lock:read:wait:p999<850us")


if __name__ == "__main__":
    main()
