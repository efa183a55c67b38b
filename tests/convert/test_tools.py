"""The command lines as users (and the acceptance checks) call them, in subprocesses."""

from tests.convert.helpers import ROOT, image_bytes, run_tool, write_jsonl, write_lines


def make_dataset(tmp_path):
    images = tmp_path / "img"
    images.mkdir()
    for i in range(5):
        (images / f"{i}.jpg").write_bytes(image_bytes((64, 48), (40 * i, 100, 100), fmt="JPEG"))
    catalog = write_jsonl(tmp_path / "c.jsonl", [{"item_id": f"X{i}", "title": f"Thing {i}", "brand": "B",
                                                  "image": f"{i}.jpg"} for i in range(5)])
    inter = write_lines(tmp_path / "i.csv", ["user_id,item_id"] + [f"u{u},X{i}" for u in range(3) for i in range(5)])
    out = tmp_path / "ds"
    done = run_tool("convert.py", "jsonl", "--catalog", catalog, "--images", images, "--interactions", inter,
                    "--out", out, "--shard-size", "2")
    assert done.returncode == 0, done.stderr
    assert "5 items (5 with image" in done.stdout
    return out


def test_convert_and_inspect_verify_dump(tmp_path):
    out = make_dataset(tmp_path)
    res = run_tool("inspect_dataset.py", out, "--verify", "--dump", "2", "--dump-dir", tmp_path / "dump")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "items 5: 5 with image" in res.stdout and "verify: OK" in res.stdout
    assert "000000001 X1 [image] title: Thing 1 | brand: B | categories: Missing" in res.stdout
    assert sorted(p.name for p in (tmp_path / "dump").iterdir()) == [
        "000000000.jpg", "000000000.json", "000000001.jpg", "000000001.json"]


def test_inspect_verify_finds_tampering(tmp_path):
    out = make_dataset(tmp_path)
    shard = out / "shards" / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:1024] + b"\0" * (len(shard.read_bytes()) - 1024))
    res = run_tool("inspect_dataset.py", out, "--verify")
    assert res.returncode == 1
    assert "shard-000001.tar: sha256 differs from the manifest" in res.stdout
    assert "shard-000001.tar: 1 samples, the manifest says 2" in res.stdout


def test_errors_are_one_line_with_exit_2(tmp_path):
    res = run_tool("convert.py", "jsonl", "--catalog", tmp_path / "missing.jsonl", "--out", tmp_path / "o")
    assert res.returncode == 2
    assert res.stderr.strip() == f"cliper-dist: error: file not found: {tmp_path / 'missing.jsonl'}"
    res = run_tool("inspect_dataset.py", tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip() == (f"cliper-dist: error: {tmp_path} is a directory of unknown kind; "
                                  "inspect_dataset wants a dataset directory")


def test_demo_and_checkpoint_tools_report_bad_arguments_in_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for script, args, message in [
        ("make_demo.py", ["--out", tmp_path / "raw", "--items", "3"], "--items must be >= 18; got 3"),
        ("make_demo.py", ["--out", blocker / "raw"], f"--out {blocker / 'raw'}: cannot write ("),
        ("init_checkpoint.py", ["--model", ROOT / "configs/models/clip-tiny.json", "--out", blocker / "w.pt"],
         f"--out {blocker / 'w.pt'}: cannot write ("),
    ]:
        res = run_tool(script, *args)
        assert res.returncode == 2, res.stderr[-2000:]
        # the last line: open_clip logs that the model is random before it
        assert res.stderr.strip().splitlines()[-1].startswith(f"cliper-dist: error: {message}"), res.stderr[-2000:]
