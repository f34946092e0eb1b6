"""The one progress reporter (deeppose_tf/progress.py)."""

import io
import logging

from deeppose_tf.progress import Progress


class Clock:
  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def test_terminal_redraws_one_line_with_count_total_and_rate():
  clock, stream = Clock(), io.StringIO()
  bar = Progress("predict", 4, unit="images", stream=stream, interactive=True, clock=clock)
  clock.now += 1.0
  bar.update(2)
  clock.now += 0.1  # under draw_every: not redrawn
  bar.update(1)
  clock.now += 1.0
  bar.update(1)  # the total: final line, newline
  bar.close()  # nothing more
  assert stream.getvalue() == ("\rpredict: 2/4 images (50%), 2.0/s"
                               "\rpredict: 4/4 images (100%), 1.9/s\n")


def test_terminal_unknown_total_ends_the_line_on_close():
  clock, stream = Clock(), io.StringIO()
  with Progress("train", stream=stream, interactive=True, clock=clock, unit="records") as bar:
    clock.now += 2.0
    bar.set(10)  # records.write_split passes running counts
  assert stream.getvalue() == "\rtrain: 10 records, 5.0/s\rtrain: 10 records, 5.0/s\n"


def test_log_file_gets_periodic_info_lines(caplog):
  clock, stream = Clock(), io.StringIO()
  # Progress logs through absl's logger, whose own level any earlier in-process flag
  # parse or set_verbosity may have raised to WARNING; set it here so the test does
  # not depend on which tests ran before it.
  with caplog.at_level(logging.INFO, logger="absl"):
    bar = Progress("train", None, unit="records", log_every=10.0, stream=stream,
                   interactive=False, clock=clock)
    for _ in range(30):
      clock.now += 1.0
      bar.update(5)
    bar.close()
  assert stream.getvalue() == ""  # no carriage returns in a log file
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("train:")]
  assert lines == ["train: 50 records, 5.0/s", "train: 100 records, 5.0/s",
                   "train: 150 records, 5.0/s"]  # every 10 s; close adds no duplicate
  caplog.clear()
  with caplog.at_level(logging.INFO, logger="absl"):
    with Progress("val", 3, unit="records", stream=stream, interactive=False,
                  clock=clock) as bar:
      clock.now += 1.0
      bar.set(3)
  assert [r.getMessage() for r in caplog.records] == ["val: 3/3 records (100%), 3.0/s"]
