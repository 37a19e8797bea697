"""The StdOut metrics format: what the trial writes is what Katib's collector reads back."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from hpo_lib.errors import ConfigError
from hpo_lib.katib import contract


# Katib's own reading of sample lines (kubeflow/katib file-metricscollector, default filter)
@pytest.mark.parametrize("line, names, expected", [
    ("epoch 1: loss=0.3", ["loss"], {"loss": "0.3"}),
    ("epoch=3 loss=1e-05 val_loss=1.5E+3", ["loss", "val_loss"], {"loss": "1e-05", "val_loss": "1.5E+3"}),
    ("loss = 0.3", ["loss"], {"loss": "0.3"}),
    ("loss: 0.3", ["loss"], {}),
    ("val/loss=0.2", ["loss"], {"loss": "0.2"}),
    ("loss=nan", ["loss"], {"loss": ""}),
    ("baseline_val_loss=0.5 val_loss=0.4", ["val_loss"], {"val_loss": "0.4"}),
    ("accuracy=98%", ["accuracy"], {"accuracy": "98"}),
])
def test_parser_reads_lines_as_katib_does(line, names, expected):
    # the default filter reads the names asked for, as Katib's StdOut collector does
    assert contract.parse_metrics_line(line, names)[1] == expected


def test_lines_without_a_metric_name_are_skipped():
    # a line that names no collected metric is no observation at all
    assert contract.parse_metrics_line("2026-01-01T00:00:00Z starting", ["val_loss"]) is None


@pytest.mark.parametrize("token, ok", [
    ("2026-11-23T10:00:00Z", True), ("2026-11-23T10:00:00.123456Z", True), ("2026-11-23T10:00:00.123456789Z", True),
    ("2026-11-23T10:00:00+02:00", True), ("2026-11-23 10:00:00,123", False), ("epoch=1", False),
])
def test_rfc3339_timestamps(token, ok):
    # only RFC 3339 timestamps count (Go's RFC3339Nano); anything else is Katib's zero time
    assert (contract.parse_timestamp(token) is not None) == ok


def test_formatted_line_round_trips_through_the_default_filter():
    now = datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=UTC)
    metrics = {"epoch": 3, "val_loss": 0.0123456789, "val_rmse": 1.5e-7, "train_time_s": 12.5, "n_params": 52289}
    line = contract.format_metrics_line(metrics, now=now)
    stamp, parsed = contract.parse_metrics_line(line, metrics)
    # the timestamp leads the line and every value reads back to within the printed precision
    assert line.startswith("2026-11-23T10:00:00.123456Z ") and stamp == now
    for name, value in metrics.items():
        assert math.isclose(float(parsed[name]), value, rel_tol=1e-5)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_never_printed(value):
    # a NaN or infinite value is refused instead of printed
    with pytest.raises(ValueError, match="non-finite"):
        contract.format_metrics_line({"val_loss": value})


def test_metric_names_outside_the_safe_alphabet_are_refused():
    # a name the default filter would cut is refused, by name
    with pytest.raises(ValueError, match="val/loss"):
        contract.format_metrics_line({"val/loss": 0.1})


def test_custom_filter_needs_two_groups():
    # a custom filter without a name group and a value group is refused
    with pytest.raises(ConfigError, match="two capture groups"):
        contract.compile_filters([r"loss=\d+"])


def test_json_metrics_lines_are_read_as_katibs_file_collector_reads_them():
    from datetime import UTC, datetime

    from hpo_lib.katib.contract import ZERO_TIME, parse_json_metrics_line

    # string values count; numbers are skipped as Katib's jsonObj[m].(string) skips them
    stamp, values = parse_json_metrics_line('{"val_loss": "0.5", "val_rmse": 0.2, "timestamp": 1700000000.5}',
                                            ["val_loss", "val_rmse"])
    assert values == {"val_loss": "0.5"} and stamp == datetime.fromtimestamp(1700000000.5, tz=UTC)
    assert parse_json_metrics_line('{"val_loss": "1", "timestamp": "2024-01-02T03:04:05.123456789Z"}',
                                   ["val_loss"])[0].microsecond == 123456
    assert parse_json_metrics_line('{"val_loss": "1"}', ["val_loss"])[0] == ZERO_TIME
    # a line naming no collected metric is no observation; a line that is not a JSON object fails the collection
    assert parse_json_metrics_line('{"other": "1"}', ["val_loss"]) is None
    assert parse_json_metrics_line("   ", ["val_loss"]) is None
    with pytest.raises(ValueError, match="JSON object"):
        parse_json_metrics_line("val_loss=1", ["val_loss"])


def test_every_shell_safe_character_is_one_sh_c_leaves_alone():
    safe = [chr(c) for c in range(32, 127) if contract.SHELL_SAFE.fullmatch(chr(c))]
    # the allow-list a tool writes trial arguments with never admits a character lint's S-SHELL reports
    assert safe and not any(contract.SHELL_META.search(c) for c in safe)
    # and what sh re-parses is outside it
    assert not any(contract.SHELL_SAFE.fullmatch(c) for c in "&;|<>$()`'\"\\ *?")
