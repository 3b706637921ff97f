"""The public API: `import gssm_jax as gj` gives the everyday names, listed in `__all__`, and the version."""

import importlib.metadata
import subprocess
import sys

import gssm_jax as gj


def test_every_public_name_resolves_and_is_listed():
    assert gj.__all__ == sorted(gj.__all__) and len(set(gj.__all__)) == len(gj.__all__)
    for name in gj.__all__:
        value = getattr(gj, name)
        assert value is not None, name
        assert name in dir(gj)
    # The everyday names of the data flow, config -> graph -> kernels -> sampler -> loss -> calibration -> training.
    assert {"load_config", "GraphSpec", "get_family", "sample_kernels", "sampling_tables", "sample_tokens",
            "entropy_rate", "token_losses", "log_likelihood", "calibrate_pair", "run_calibration",
            "train_and_evaluate"} <= set(gj.__all__)


def test_names_are_the_library_objects():
    from gssm_jax.inference import api
    from gssm_jax.sampling import sampler

    assert gj.sample_tokens is sampler.sample_tokens and gj.entropy_rate is api.entropy_rate
    assert gj.keys.kernel_key(3) is not None and gj.data.FileBatches is not None  # subpackages on demand


def test_version_is_the_package_metadata():
    try:
        expected = importlib.metadata.version("gssm_jax")
    except importlib.metadata.PackageNotFoundError:
        expected = "unknown"
    assert gj.__version__ == expected


def test_importing_the_key_tree_does_not_import_the_training_stack():
    code = "import sys, gssm_jax.keys; print('flax' in sys.modules or 'orbax' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "False"


def test_unknown_name_is_an_attribute_error_naming_it():
    try:
        gj.no_such_thing  # noqa: B018
    except AttributeError as error:
        assert "no_such_thing" in str(error)
    else:
        raise AssertionError("expected an AttributeError")


def test_a_name_re_exported_as_its_module_is_not_also_defined_in_it():
    # `gssm_jax.lazy` gives the module for a name equal to its module's last component, and importing a
    # submodule binds that name on the package anyway: a function of the same name inside it would be
    # unreachable through the package.
    import pkgutil

    for info in pkgutil.iter_modules(gj.__path__, "gssm_jax."):
        names = getattr(importlib.import_module(info.name), "_NAMES", {})
        for module_name, listed in names.items():
            last = module_name.rpartition(".")[2]
            if last in listed:
                assert not hasattr(importlib.import_module(module_name), last), f"{module_name}.{last}"
