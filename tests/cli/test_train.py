"""`gssm-train`'s last line: the run's outcome, not its result record."""

from gssm_jax.cli.train import finished_line


def test_the_finished_line_gives_the_excess_its_error_and_the_result_file():
    result = {"eval/excess_loss_nats_per_token": 0.22169967, "eval/excess_loss_standard_error": 0.01225116,
              "eval/entropy_nats_per_token": 0.0328, "tokens_seen": 20480, "cooldowns": []}
    assert finished_line(result, "runs/train_tiny") == (
        "finished: excess loss 0.2217 +- 0.0123 nats/token over the exact entropy rate 0.0328 of the held-out "
        "sequences, after 20,480 tokens (runs/train_tiny/result.json)")
