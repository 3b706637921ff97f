"""A run resolved once: its typed fields, what ensemble members must share, and one-line refusals (no compiling)."""

import dataclasses

import pytest

from gssm_jax.configs.base import get_config
from gssm_jax.learners import registry
from gssm_jax.training.run import ConfigError, resolve


def _config(**fields):
    """base:size=tiny with `section__field=value` overrides."""
    config = get_config("size=tiny")
    config.update_from_flattened_dict({dotted.replace("__", "."): value for dotted, value in fields.items()})
    return config


def test_resolve_types_every_part_of_the_run(tmp_path):
    run = resolve(_config(), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()  # checks create nothing: a refused config leaves no empty directory
    assert run.shape == registry.model_config("transformer", 8, get_config("size=tiny").model)
    assert (run.graph.vocab_size, run.kernel_seed, run.init_seed) == (8, 0, 0)
    assert (run.data.source, run.data.batch_size, run.data.length, run.data.data_seed) == ("onfly", 16, 32, 1)
    assert (run.eval.num_sequences, run.eval.validation_sequences, run.eval.eval_seed) == (16, 8, 12345)
    assert (run.optimizer.schedule, run.optimizer.decay_fraction, run.num_steps, run.cooldowns) == ("cosine", 0.2, 40,
                                                                                                     ())
    assert run.tokens_per_step == 16 * 32 and run.config["workdir"] == str(tmp_path / "run")
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.num_steps = 3


def test_members_share_the_program_but_not_kernels_seeds_or_rates():
    reference = resolve(_config(), None).program_key()
    other = get_config("size=tiny,alpha_x=0.3,alpha_z=0.01")
    other.seed, other.data.data_seed, other.model.init_seed, other.eval.eval_seed = 5, 6, 7, 8
    other.optimizer.learning_rate = 0.1
    assert resolve(other, None).program_key() == reference
    for dotted, value in (("model__width", 64), ("data__length", 16), ("train__num_steps", 20),
                          ("optimizer__schedule", "wsd"), ("eval__validation_sequences", 16)):
        key = resolve(_config(**{dotted: value}), None).program_key()
        assert key[dotted.replace("__", ".")] != reference[dotted.replace("__", ".")], dotted


@pytest.mark.parametrize("fields,names", [
    ({"train__cooldowns": (0.1,), "optimizer__schedule": "wsd"}, "config.optimizer.warmup_steps=5"),
    ({"train__cooldowns": (0.5,)}, "config.optimizer.schedule=wsd"),
    ({"train__cooldowns": (1.5,), "optimizer__schedule": "wsd"}, "config.train.cooldowns"),
    ({"train__cooldowns": (0.5, 0.5), "optimizer__schedule": "wsd"}, "repeats"),
    ({"optimizer__schedule": "wsd", "optimizer__decay_fraction": 0.95}, "config.optimizer.decay_fraction=0.95"),
    ({"optimizer__decay_fraction": 0.0}, "config.optimizer.decay_fraction"),
    ({"optimizer__schedule": "linear"}, "config.optimizer.schedule='linear'"),
    ({"optimizer__warmup_steps": 40}, "config.optimizer.warmup_steps=40"),
    ({"optimizer__learning_rate": -1.0}, "config.optimizer.learning_rate"),
    ({"optimizer__beta2": 1.0}, "config.optimizer.beta2"),
    ({"optimizer__weight_decay": -0.1}, "config.optimizer.weight_decay"),
    ({"eval__validation_sequences": 0}, "config.eval.validation_sequences"),
    ({"eval__validation_sequences": 12}, "config.eval.validation_sequences=12 is not divisible"),
    ({"train__steps_per_call": 0}, "config.train.steps_per_call"),
])
def test_a_config_the_loop_cannot_run_is_one_line_naming_the_field(fields, names):
    with pytest.raises(ConfigError) as raised:
        resolve(_config(**fields), None)
    assert "\n" not in str(raised.value) and names in str(raised.value), str(raised.value)


def test_a_cool_down_fork_before_the_warmup_names_both_fields():
    with pytest.raises(ConfigError) as raised:
        resolve(_config(train__cooldowns=(0.1,), optimizer__schedule="wsd"), None)
    message = str(raised.value)
    # The branch at 0.1 of 40 steps forks at round(0.1 * 40 * 0.8) = 3, inside the 5-step warmup.
    assert "config.train.cooldowns" in message and "forks at step 3" in message


def test_a_refused_config_leaves_no_directory_and_an_unwritable_parent_is_named(tmp_path):
    config = _config()
    config.optimizer.learning_rate = -1.0
    with pytest.raises(ConfigError, match="learning_rate"):
        resolve(config, str(tmp_path / "new" / "run"))
    assert not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot be created: .*file is a file"):
        resolve(_config(), str(tmp_path / "file" / "run"))
