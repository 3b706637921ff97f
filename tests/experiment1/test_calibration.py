"""The config-driven calibration (`gssm_jax.experiment1.calibration`): the per-seed record, the time
estimate on a fake clock, the report (`calibration_report`) and `gssm-calibrate` end to end.

Synthetic difficulty curves stand in for the measures where only the bookkeeping is tested, so these tests
compile nothing; the end-to-end test at the bottom is the real thing.
"""

import json
import math
import os

import pytest

from gssm_jax import difficulty
from gssm_jax.difficulty.search import grid
from gssm_jax.experiment1 import calibration, calibration_report
from gssm_jax.gssm.families import get_family

SEEDS = [0, 1, 2, 3]
GRID_POINTS = 5
COMPILE_S, PER_SEED_S = 100.0, 0.5  # the fake clock: the first measurement compiles, then each seed costs 0.5 s


def settings(**changes) -> dict:
    """The settings of a chain calibration on the synthetic entropy (see `calibration_settings`)."""
    return {"graph": "chain", "measure": "entropy", "matching": "per seed", "small": 1e-3, "seeds": SEEDS,
            "batch_size": 1, "length": 1, "tolerance": 0.002, "grid_points": GRID_POINTS, "bounds": [1e-4, 10.0],
            **changes}


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SyntheticMeasurer(difficulty.Measurer):
    """The real measurer's caching and timing around synthetic curves (seed s: log1p((s + 1) alpha_X) +
    log1p(10 alpha_Z / (s + 1)), increasing in both alphas; `capped` seeds never exceed 0.05). The work
    advances the fake clock: COMPILE_S once, then PER_SEED_S per seed measured."""

    def __init__(self, clock: FakeClock, capped=()):
        super().__init__(get_family("chain"), seeds=SEEDS, batch_size=1, length=1, clock=clock)
        self.fake_clock, self.capped, self.measured_seeds = clock, set(capped), 0

    def _compute(self, alphas, measures):
        self.fake_clock.now += PER_SEED_S * len(alphas) + (COMPILE_S if not self.seconds_per_seed else 0.0)
        self.measured_seeds += len(alphas)
        values = {}
        for seed, a in alphas.items():
            value = math.log1p((seed + 1) * a["alpha_X"]) + math.log1p(10 * a["alpha_Z"] / (seed + 1))
            values[seed] = {m: min(value, 0.05) if seed in self.capped else value for m in measures[seed]}
        return values


def test_the_record_holds_every_seeds_pair():
    clock = FakeClock()
    record = calibration.compute_calibration(settings(), log=lambda line: None, measurer=SyntheticMeasurer(clock),
                                             clock=clock)
    assert set(record) >= {"settings", "target", "unit", "pairs"}
    assert record["unit"].startswith("nats/token") and record["reference"] == {"alpha_X": 1e-3, "alpha_Z": 0.125}
    assert list(record["pairs"]) == ["0", "1", "2", "3"]
    for pair in record["pairs"].values():
        x, z = pair["small_alpha_x"], pair["small_alpha_z"]
        assert pair["matched"] and pair["reason"] == "" and x["alpha_X"] == z["alpha_Z"] == 1e-3
        assert abs(x["difficulty"] - record["target"]) <= 0.002 and abs(z["difficulty"] - record["target"]) <= 0.002
        assert pair["mismatch"] == x["difficulty"] - z["difficulty"]
    json.dumps(record)  # a JSON file as it is


def test_a_seed_that_cannot_be_matched_is_recorded_and_reported(tmp_path):
    clock, lines = FakeClock(), []
    record = calibration.compute_calibration(settings(), log=lines.append, measurer=SyntheticMeasurer(clock, {2}),
                                             clock=clock)
    unmatched = record["pairs"]["2"]
    assert not unmatched["matched"] and "outside what alpha_Z in [0.0001, 10] reaches" in unmatched["reason"]
    assert all(record["pairs"][seed]["matched"] for seed in ("0", "1", "3"))
    assert any("seed 2:" in line and "UNMATCHED: small_alpha_x: target" in line for line in lines)
    assert any("3 of 4 pairs matched" in line for line in lines)
    result = {"graphs": {"chain": {"description": "d", "vocab_size": 32, "seeds": SEEDS, "batch_size": 1,
                                   "length": 1, "calibrations": {"entropy": record}, "compression_performance": {}}}}
    markdown = calibration_report.report_markdown(result)
    assert "3 of 4 pairs matched within 0.002" in markdown and "| 2 |" in markdown and "NO: small_alpha_x" in markdown
    assert f"{record['pairs']['0']['mismatch']:+.4f}" in markdown and "bits]" in markdown  # target in nats [bits]
    calibration_report.plot_curves(result, str(tmp_path / "calibration.png"))
    assert (tmp_path / "calibration.png").stat().st_size > 0


def test_the_time_estimate_is_from_a_compiled_trial():
    clock, lines = FakeClock(), []
    measurer = SyntheticMeasurer(clock)
    record = calibration.compute_calibration(settings(), log=lines.append, measurer=measurer, clock=clock)
    # Before the search: the reference (compiles: 100 s + 4 x 0.5 s), then the two middle grid points of each side,
    # compiled (4 x 0.5 s each). Then each side has 3 grid points and EXPECTED_REFINEMENTS trials per seed to go.
    seeds = len(SEEDS)
    elapsed = COMPILE_S + (1 + 2 * calibration.PROBES) * seeds * PER_SEED_S
    grid_left = GRID_POINTS - calibration.PROBES
    expected = elapsed + 2 * PER_SEED_S * seeds * (grid_left + calibration.EXPECTED_REFINEMENTS)
    assert record["seconds"]["estimated"] == pytest.approx(expected)
    sides = ("small_alpha_x", "small_alpha_z")
    assert calibration.estimate_seconds(elapsed, dict.fromkeys(sides, PER_SEED_S), seeds,
                                        dict.fromkeys(sides, grid_left), dict.fromkeys(sides, seeds)) == expected
    measured = COMPILE_S + PER_SEED_S * measurer.measured_seeds
    assert record["seconds"]["measured"] == pytest.approx(measured) == clock.now
    assert measured / 2 <= expected <= 2 * measured
    # The compilation counts once, not once per trial (the old estimate: first trial x trials = 40 min).
    estimate_line = next(line for line in lines if "expect about" in line)
    assert "the first trial took 102.0 s with compilation" in estimate_line
    assert "2.00 s (small_alpha_x)" in estimate_line
    assert f"expect about {expected / 60:.1f} min in all" in estimate_line


def test_the_estimate_of_a_second_measure_uses_the_shared_measurers_timing():
    # match=both: the second measure finds the reference and the whole grid measured already (same batches).
    clock = FakeClock()
    measurer = SyntheticMeasurer(clock)
    measurer.measures = ("entropy", "gzip")
    calibration.compute_calibration(settings(), log=lambda line: None, measurer=measurer, clock=clock)
    second = calibration.compute_calibration(settings(measure="gzip"), log=lambda line: None, measurer=measurer,
                                             clock=clock)
    # Its grid holds no match within the tolerance for any seed here, so every seed is still to refine.
    refinements_only = 2 * measurer.seconds_per_seed[-1] * len(SEEDS) * calibration.EXPECTED_REFINEMENTS
    assert second["seconds"]["estimated"] == pytest.approx(refinements_only)
    # A seed matched on the grid, or out of reach, needs no refinement: a tolerance that the grid meets everywhere.
    third = calibration.compute_calibration(settings(measure="gzip", tolerance=10.0), log=lambda line: None,
                                            measurer=measurer, clock=clock)
    assert third["seconds"]["estimated"] == third["seconds"]["measured"] == 0.0


def test_the_estimate_probes_the_searchs_own_grid():
    # The probes are measured once: the search finds them in the measurer's memory.
    search = difficulty.seed_search(1.0, tolerance=0.1, bounds=(1e-4, 10.0), grid_points=6)
    asked = [next(search)] + [search.send(0.0) for _ in range(5)]
    assert asked == grid((1e-4, 10.0), 6) and asked[0] == 1e-4 and asked[-1] == 10.0


def test_model_results_are_read_in_nats(tmp_path):
    (tmp_path / "result.json").write_text('{"eval/loss_nats_per_token": 1.3862943611198906}')
    rows = {"reference": {}, "entropy/small_alpha_x": {}}
    assert calibration_report.read_model_results(f"entropy/small_alpha_x={tmp_path}", rows) == {
        "entropy/small_alpha_x": pytest.approx(1.3862943611198906)}
    with pytest.raises(ValueError, match="row in reference, entropy/small_alpha_x"):
        calibration_report.read_model_results(f"small_alpha_x={tmp_path}", rows)


@pytest.mark.slow  # compiles the sampler and forward algorithm for the 4x4 graph
def test_calibrate_entry_point_writes_reports(tmp_path):
    from gssm_jax.configs.calibrate import get_config

    config = get_config("graph=four_by_four,size=tiny")
    lines = []
    result = calibration.run_calibration(config, str(tmp_path), log=lines.append)
    records = result["graphs"]["four_by_four"]["calibrations"]
    assert set(records) == {"entropy", "gzip"}
    for record in records.values():
        assert set(record["pairs"]) == {"0", "1"}
    # Before searching, each measure logs the estimate; at the end the measured time next to it.
    assert sum("expect about" in line for line in lines) == 2
    assert sum("done in" in line and "(estimated" in line for line in lines) == 2
    assert set(json.loads((tmp_path / "calibration.json").read_text())["graphs"]) == {"four_by_four"}
    markdown = (tmp_path / "calibration.md").read_text()
    assert "mismatch (x - z)" in markdown and "**gzip** (bytes/token)" in markdown
    assert "entropy/small_alpha_z" in markdown or not all(p["matched"] for p in records["entropy"]["pairs"].values())
    assert (tmp_path / "calibration.png").stat().st_size > 0
    # The sweep's cache: a second run reads the records instead of searching again.
    assert os.path.exists(calibration.calibration_path(str(tmp_path), "four_by_four", "entropy"))
    again = calibration.run_calibration(config, str(tmp_path), log=lambda line: None)
    assert again["graphs"]["four_by_four"]["calibrations"] == json.loads(json.dumps(records))


def test_a_record_of_the_older_mean_matching_is_not_reused(tmp_path):
    from gssm_jax.configs.calibrate import get_config

    config = get_config("graph=chain,measure=entropy,size=tiny")
    path = calibration.calibration_path(str(tmp_path), "chain", "entropy")
    os.makedirs(os.path.dirname(path))
    current = calibration.calibration_settings(config, "chain", "entropy")
    assert current["matching"] == "per seed" and current["tolerance"] == 0.07  # nats/token
    older = {key: value for key, value in current.items() if key != "matching"}
    for written, reused in ((older, False), (current, True)):
        with open(path, "w") as file:
            json.dump({"settings": written, "pairs": {}}, file)
        assert (calibration.cached_record(config, "chain", "entropy", str(tmp_path)) is not None) == reused
