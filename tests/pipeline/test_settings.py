"""The settings file: read whole, every refusal naming the file and the key, before anything runs."""

import pytest
import yaml

from fixability_dag.pipeline.config import AuditConfig
from fixability_dag.pipeline.settings import SETTINGS_ENV, SettingsError, read_settings_file, settings_path_from_env

from tests.support import TEST_DATA, write_jsonl


def settings_file(tmp_path, values, name="audit.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return path


def test_a_file_sets_what_it_names_and_leaves_the_demo_defaults(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "qa.csv").write_text("question,answer\nWhat is 2+2?,4\n")
    path = settings_file(tmp_path, {"n_samples": 4, "chain_lengths": [1, 2], "problem_path": "data/qa.csv",
                                    "temperature": 1})
    config = read_settings_file(path)
    assert config.n_samples == 4 and config.chain_lengths == (1, 2) and config.temperature == 1.0
    assert config.problem_path == str(data / "qa.csv")  # relative to the file, not to the working directory
    assert config.problem_format == "csv"  # inferred from the extension
    assert config.retry_budget == AuditConfig().retry_budget
    assert [p.question for p in config.load_problems()] == ["What is 2+2?"]
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert read_settings_file(empty) == AuditConfig()


@pytest.mark.parametrize("values, named", [
    ({"n_sample": 4}, "unknown setting 'n_sample' (did you mean 'n_samples'?)"),
    ({"prompt_templat": "x"}, "unknown setting 'prompt_templat'"),
    ({"n_samples": "16"}, "setting 'n_samples': expected int, got '16'"),
    ({"label_early_stop": 1}, "setting 'label_early_stop': expected bool"),
    ({"chain_lengths": [1, "two"]}, "setting 'chain_lengths[1]': expected int"),
    ({"n_samples": 0}, "n_samples must be >= 1"),
    ({"retry_budget": -2}, "retry_budget must be >= 1"),
    ({"problem_path": "x.jsonl"}, "setting 'problem_format': missing, and cannot be inferred from problem_path"),
    ({"problem_format": "arith", "problem_path": "x.csv"}, "problem_path"),
    ({"intervention_budget": 2}, "label_block (4) must be <= retry_budget (16) and intervention_budget (2)"),
    ({"eval_budget": 8, "eval_retry_samples": 4}, "eval_retry_samples (4) must be >= eval_budget (8)"),
    ({"headroom_threshold": 1.5}, "headroom_threshold must be in [0, 1]"),
    ({"diagnostic_early_stop": True}, "diagnostic_early_stop needs diagnostic_block"),
    ({"diagnostic_block": 0}, "diagnostic_block (0) must be between 1 and n_samples (16)"),
    ({"diagnostic_block": 17}, "diagnostic_block (17) must be between 1 and n_samples (16)"),
    ({"diagnostic_block": "4"}, "setting 'diagnostic_block': expected int"),
    ({"label_subsample": 0}, "label_subsample must be null (every failed problem), a fraction in (0, 1) or a whole"),
    ({"label_subsample": 2.5}, "label_subsample must be null (every failed problem), a fraction in (0, 1) or a whole "
                               "count >= 1, got 2.5 (a count must be a whole number)"),
    ({"label_subsample": -0.5}, "label_subsample must be null"),
    ({"label_subsample": "10%"}, "setting 'label_subsample': expected float, got '10%'"),
    ({"label_subsample": True}, "setting 'label_subsample': expected float, got True"),
])
def test_bad_settings_are_refused_with_the_file_and_key_named(tmp_path, values, named):
    path = settings_file(tmp_path, values)
    with pytest.raises(SettingsError) as refused:
        read_settings_file(path)
    assert str(path) in str(refused.value) and named in str(refused.value)


def test_a_broken_problem_file_is_refused_when_the_settings_are_read(tmp_path):
    write_jsonl(tmp_path / "gsm.jsonl", [{"question": "q", "answer": "#### 3"}, {"question": "q"}])
    path = settings_file(tmp_path, {"problem_format": "gsm8k", "problem_path": "gsm.jsonl"})
    with pytest.raises(SettingsError, match=r"setting 'problem_path': .*gsm.jsonl, line 2, field 'answer'"):
        read_settings_file(path)
    gsm = settings_file(tmp_path, {"problem_format": "gsm8k", "problem_path": str(TEST_DATA / "gsm8k_train_first40.jsonl")})
    assert len(read_settings_file(gsm).load_problems()) == 40


def test_unreadable_or_invalid_yaml_is_named(tmp_path):
    with pytest.raises(SettingsError, match=r"nowhere.yaml \(\$FIXABILITY_SETTINGS\): cannot read it"):
        read_settings_file(tmp_path / "nowhere.yaml")
    (tmp_path / "bad.yaml").write_text("n_samples: [1\n")
    with pytest.raises(SettingsError, match="bad.yaml: not valid YAML"):
        read_settings_file(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- n_samples\n")
    with pytest.raises(SettingsError, match="list.yaml: expected a mapping of audit settings, got list"):
        read_settings_file(tmp_path / "list.yaml")


def test_the_environment_variable_names_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv(SETTINGS_ENV, raising=False)
    assert settings_path_from_env() is None
    monkeypatch.setenv(SETTINGS_ENV, str(tmp_path / "audit.yaml"))
    assert settings_path_from_env() == tmp_path / "audit.yaml"


def test_the_readme_documents_every_setting():
    """The README's settings table is the user's reference: a setting added to AuditConfig must appear in it."""
    from tests.support import REPO

    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("### The settings file"):]
    table = table[:table.index("**`fixability audit PATH`**")]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    documented = {key.strip("` ") for row in rows for key in row.split("|")[1].split(",")}
    assert documented == set(AuditConfig.__dataclass_fields__)


def test_the_organism_is_a_built_in_suite():
    """``problem_format: organism`` reads no file (a path is refused) and loads the generator's problems, families
    included, under the suite name ``organism``."""
    cfg = AuditConfig(problem_format="organism")
    problems = cfg.load_problems()
    assert cfg.suite_name == "organism" and len(problems) == 400
    assert {p.suite for p in problems} == {"organism"} and all(p.family for p in problems)
    with pytest.raises(ValueError, match="built-in suite"):
        AuditConfig(problem_format="organism", problem_path="x.jsonl")
