"""The stage loop (build/stages.py) with stand-in stages over a real cache: what is
restored, what runs, and what happens to an entry that does not give what it recorded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from imagesmith.build.stages import Stages
from imagesmith.cache import Cache, Entry
from imagesmith.config.load import load_spec
from imagesmith.host.run import Runner
from imagesmith.stages.base import KeyInputs, Stage
from imagesmith.stages.context import Context
from imagesmith.stages.plan import StagePlan, restore_point

Write = Callable[[str, str], Path]


class Fake(Stage):
    def __init__(self, name: str, resumable: bool = True, restore_with: tuple[str, ...] = ()) -> None:
        self.name, self.resumable, self.restore_with = name, resumable, restore_with
        self.good = True  # what restore answers
        self.prepared = 0  # builds that called prepare

    def inputs(self, given: KeyInputs) -> dict[str, str]:
        return {}

    def prepare(self, ctx: Context) -> None:
        self.prepared += 1

    def run(self, ctx: Context) -> None:
        ctx.products.setdefault("ran", []).append(self.name)

    def save(self, ctx: Context, entry: Path) -> dict[str, str]:
        (entry / "result").write_text(self.name)
        return {"made": self.name}

    def restore(self, ctx: Context, entries: dict[str, Entry]) -> bool:
        assert set(entries) == {self.name, *self.restore_with}
        ctx.products.setdefault("restored", []).append(self.name)
        return self.good


def pipeline() -> tuple[Fake, ...]:
    return (
        Fake("bootstrap"),
        Fake("packages", restore_with=("bootstrap",)),
        Fake("customize", resumable=False),
        Fake("filesystems", restore_with=("customize",)),
        Fake("disk", restore_with=("filesystems", "customize")),
    )


def plans(keys: str = "abpcd") -> list[StagePlan]:
    names = ("bootstrap", "packages", "customize", "filesystems", "disk")
    return [StagePlan(name, {"x": key}, key=key * 8) for name, key in zip(names, keys, strict=True)]


def build(write: Write, cache: Cache, stages: tuple[Fake, ...], keys: str = "abpcd", **kw: str) -> Context:
    spec = load_spec(write("a.yaml", "name: a\ndevice: qemu-amd64\n"))
    ctx = Context(spec=spec, runner=Runner(), work=cache.root / "work")
    Stages(ctx, cache, plans(keys), kw.get("rebuild_from")).run(stages)
    return ctx


def test_a_cold_build_runs_every_stage_and_a_warm_one_restores_the_last(write: Write, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    stages = pipeline()
    cold = build(write, cache, stages)
    assert cold.products == {"ran": ["bootstrap", "packages", "customize", "filesystems", "disk"]}
    assert [stage.prepared for stage in stages] == [0, 1, 1, 1, 1]  # as the one before starts
    assert cache.lookup("disk", "dddddddd").meta["made"] == "disk"  # type: ignore[union-attr]
    warm = build(write, cache, stages)
    assert warm.products == {"restored": ["disk"]}
    assert [stage.prepared for stage in stages] == [0, 1, 1, 1, 1]  # none runs: none prepares


def test_a_later_change_restores_the_latest_resumable_stage(write: Write, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    stages = pipeline()
    build(write, cache, stages)
    # a new filesystems key: customize's entry alone cannot resume, the packages stage can
    assert restore_point(plans("abpxy"), lambda p: cache.lookup(p.name, p.key) is not None) == 1
    assert restore_point(plans("abpcd"), lambda p: cache.lookup(p.name, p.key) is not None) == 4
    changed = build(write, cache, stages, keys="abpxy")
    assert changed.products == {"restored": ["packages"], "ran": ["customize", "filesystems", "disk"]}
    # a new packages key: the bootstrap's entry resumes
    changed = build(write, cache, stages, keys="aqrst")
    assert changed.products == {
        "restored": ["bootstrap"],
        "ran": ["packages", "customize", "filesystems", "disk"],
    }


def test_an_entry_that_does_not_restore_is_discarded(write: Write, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    stages = pipeline()
    build(write, cache, stages)
    stages[4].good = False
    again = build(write, cache, stages)
    assert again.products == {"restored": ["disk", "filesystems"], "ran": ["disk"]}
    assert cache.lookup("disk", "dddddddd") is not None  # made anew by the run


def test_rebuild_from_runs_that_stage_and_every_later_one(write: Write, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    stages = pipeline()
    build(write, cache, stages)
    forced = build(write, cache, stages, rebuild_from="customize")
    assert forced.products == {"restored": ["packages"], "ran": ["customize", "filesystems", "disk"]}


def test_a_stage_this_build_already_holds_is_neither_restored_nor_run(write: Write, tmp_path: Path) -> None:
    spec = load_spec(write("a.yaml", "name: a\ndevice: qemu-amd64\n"))
    ctx = Context(spec=spec, runner=Runner(), work=tmp_path / "work")
    ctx.done.update(("bootstrap", "packages"))  # a re-lock made them
    Stages(ctx, None, plans(), None).run(pipeline())
    assert ctx.products == {"ran": ["customize", "filesystems", "disk"]}


def test_an_entry_placed_in_the_background_holds_its_lock_until_it_is_in_place(
    write: Write, tmp_path: Path
) -> None:
    cache = Cache(tmp_path / "cache")
    stages = pipeline()
    stages[3].commit_in_background = True  # filesystems
    seen: list[bool] = []

    class Disk(Fake):
        def run(self, ctx: Context) -> None:
            # the filesystems entry may still be being placed: its lock is still held
            from filelock import FileLock, Timeout

            try:
                with FileLock(str(cache.root / "locks" / "filesystems-cccccccc.lock"), timeout=0):
                    seen.append(False)
            except Timeout:
                seen.append(True)
            super().run(ctx)

    ctx = build(write, cache, (*stages[:4], Disk("disk", restore_with=("filesystems", "customize"))))
    assert ctx.products["ran"][-2:] == ["filesystems", "disk"]
    assert seen == [True], "no other build takes the stage up before its entry is in place"
    assert cache.lookup("filesystems", "cccccccc") is not None, "in place when the build is done"
    assert build(write, cache, stages).products == {"restored": ["disk"]}


def test_an_entry_found_damaged_while_the_build_goes_on_stops_it_before_anything_is_kept(
    write: Write, tmp_path: Path
) -> None:
    import pytest

    from imagesmith.cache.store import DamagedEntry
    from imagesmith.errors import ImagesmithError

    cache = Cache(tmp_path / "cache")
    stages = pipeline()
    build(write, cache, stages)
    (cache.root / "entries" / "bootstrap-aaaaaaaa" / "result").write_text("changed")
    # a new packages key: the bootstrap's entry is restored, and checked while packages runs
    with pytest.raises(DamagedEntry, match=r"bootstrap aaaaaaaa is damaged \(its files changed"):
        build(write, cache, stages, keys="aqrst")
    assert cache.lookup("packages", "qqqqqqqq") is None, "nothing made from it is kept"

    class Broken(Fake):
        def run(self, ctx: Context) -> None:
            raise ImagesmithError("a program of the damaged tree crashed")

    # a stage that fails meanwhile: the damaged entry is what the build says
    with pytest.raises(DamagedEntry) as raised:
        build(
            write,
            cache,
            (stages[0], Broken("packages", restore_with=("bootstrap",)), *stages[2:]),
            keys="aqrst",
        )
    assert "crashed" in str(raised.value.__context__)
    # discarded (nobody uses it): the next build makes it again
    entry = raised.value.entry
    cache.discard(entry, raised.value.why, lambda text: None, "the build starts again")
    assert build(write, cache, stages, keys="aqrst").products["ran"][0] == "bootstrap"
