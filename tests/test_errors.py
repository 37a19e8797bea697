"""The project's exceptions and their one boundary: a settings hint per face, one stderr line, the exit codes."""

from __future__ import annotations

import io

import pytest

from hpo_lib import errors
from hpo_lib.errors import ConfigError, DataError, HpoError, TrackingError, first_line, flag_hint, run_main


def raising(exc: BaseException):
    def body() -> int:
        raise exc
    return body


# ------------------------------------------------------------------------------------------------ flag_hint
def test_settings_become_the_flags_of_hpo():
    # snake_case settings become --kebab-case flags, in the order given
    assert flag_hint(ConfigError("bad", settings=("lr", "grad_clip"))) == "; set with --lr, --grad-clip"
    assert flag_hint(ConfigError("bad", settings=["tracking_uri"])) == "; set with --tracking-uri"


def test_an_error_without_settings_has_no_hint():
    # nothing to set: no hint at all
    assert flag_hint(DataError("empty series")) == ""


# ------------------------------------------------------------------------------------------------ run_main
@pytest.mark.parametrize("exc", [ConfigError("lr must be positive, got -1", settings=("lr",)),
                                 DataError("ticker XYZ is unknown"), TrackingError("MLflow refused")])
def test_bad_input_is_one_stderr_line_and_exit_code_2(exc):
    err = io.StringIO()
    # every HpoError ends with argparse's usage code
    assert run_main(raising(exc), err=err) == errors.EXIT_BAD_INPUT == 2
    # one line: the program, the message, the hint
    assert err.getvalue().splitlines() == [f"hpo: error: {exc}{flag_hint(exc)}"]


def test_the_hint_is_on_the_error_line():
    err = io.StringIO()
    run_main(raising(ConfigError("grad_clip must be > 0, got 0", settings=("grad_clip",))), prog="hpo trial", err=err)
    # the face's program name, the message, then the flag
    assert err.getvalue() == "hpo trial: error: grad_clip must be > 0, got 0; set with --grad-clip\n"


def test_ctrl_c_is_exit_code_130(capsys):
    # the shell's code for SIGINT, one line on the default stderr
    assert run_main(raising(KeyboardInterrupt())) == errors.EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == "hpo: interrupted\n"


def test_a_body_that_ends_keeps_its_exit_code():
    err = io.StringIO()
    # the body's own code comes back and nothing is written
    assert run_main(lambda: 0, err=err) == 0 and run_main(lambda: 3, err=err) == 3
    assert err.getvalue() == ""


def test_a_bug_is_not_turned_into_bad_input():
    # an exception that is not an HpoError escapes with its traceback
    with pytest.raises(ZeroDivisionError):
        run_main(raising(ZeroDivisionError("division by zero")), err=io.StringIO())


def test_hpo_error_subclasses_keep_their_settings():
    exc = ConfigError("x", settings=["a", "b"])
    # settings are stored as a tuple, whatever sequence was given, and are empty by default
    assert isinstance(exc, HpoError) and exc.settings == ("a", "b") and HpoError("y").settings == ()


# ------------------------------------------------------------------------------------------------ first_line
def test_first_line_of_a_long_message_or_the_type_name():
    # libraries raise pages: the first line only
    assert first_line(RuntimeError("\n  connection refused\nretry 1\nretry 2")) == "connection refused"
    # an empty message: the exception's type, or the given default
    assert first_line(TimeoutError()) == "TimeoutError"
    assert first_line(TimeoutError(), default="") == ""


# ------------------------------------------------------------------------------------------------ redact
@pytest.mark.parametrize("text, redacted", [
    ("http://ana:s3cret@mlflow:5000/", "http://ana:***@mlflow:5000/"),
    ("postgresql://optuna:p%40ss@db.internal:5432/studies", "postgresql://optuna:***@db.internal:5432/studies"),
    ("mysql+pymysql://root:pw@127.0.0.1/katib", "mysql+pymysql://root:***@127.0.0.1/katib"),
    ("https://ghp_abc123@github.com/org/repo", "https://***@github.com/org/repo"),
    ("http://h/api?token=abc&run=1", "http://h/api?token=***&run=1"),
    ("yahoo:SPY,api_key=zz,start=2010-01-01", "yahoo:SPY,api_key=***,start=2010-01-01"),
    ("--storage postgresql://u:pw@h/db --set x=1", "--storage postgresql://u:***@h/db --set x=1"),
    ("s3://bucket/x?X-Amz-Signature=deadbeef", "s3://bucket/x?X-Amz-Signature=***"),
    ("access_key=AKIA1 secret=xyz", "access_key=*** secret=***"),
])
def test_redact_hides_every_credential(text, redacted):
    # the password, token or key is gone; everything else is kept
    assert errors.redact(text) == redacted


@pytest.mark.parametrize("text", [
    "sqlite:////tmp/state/studies.db", "http://127.0.0.1:5000/#/experiments/1", "file:/data/prices.csv",
    "ssh://git@host/repo", "postgresql://optuna@db/studies", "--lr=0.001 --epochs=5", "user@example.com",
])
def test_redact_leaves_text_without_credentials_alone(text):
    # no credential: the text comes back unchanged
    assert errors.redact(text) == text


def test_error_lines_and_first_lines_are_redacted():
    err = io.StringIO()
    run_main(raising(ConfigError("cannot open study storage postgresql://u:pw@h/db")), err=err)
    # the boundary's one line carries no password
    assert err.getvalue() == "hpo: error: cannot open study storage postgresql://u:***@h/db\n"
    # nor does the first line of a library's exception
    assert first_line(RuntimeError("connect to http://a:b@h failed\nretry")) == "connect to http://a:***@h failed"


def test_the_logging_filter_redacts_formatted_records():
    import logging

    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "to %s", ("http://a:b@h",), None)
    # the filter passes the record, with its message formatted and redacted
    assert errors.RedactingFilter().filter(record) and record.getMessage() == "to http://a:***@h"


def test_exit_now_flushes_what_was_written_and_skips_the_teardown():
    import subprocess
    import sys

    script = ("import atexit, logging, sys; from hpo_lib.errors import exit_now; "
              "atexit.register(lambda: print('teardown ran')); logging.basicConfig(stream=sys.stderr); "
              "print('last line', end=''); logging.getLogger('x').warning('logged'); exit_now(3)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    # everything written is out (a pipe is block-buffered, so only the flush brings it), the code is kept, and no
    # interpreter teardown ran (atexit handlers are part of it)
    assert (done.returncode, done.stdout, done.stderr.strip()) == (3, "last line", "WARNING:x:logged")
