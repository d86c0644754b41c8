"""A `supervisor run` process: the configured rooms it serves (`rooms`), its worker
processes (`workers`), replacing a worker that has served too much (`recycle`), and the
rtc SDK's shutdown (`rtc_shutdown`)."""
