"""What a running supervisor tells about itself: Prometheus metrics (`metrics`, the
registry, over the collectors by area: `room_metrics`, `dispatch_metrics`, `loop_metrics`,
built from `families`), the rooms by state that `/readyz`, `/status` and the metrics
agree on (`census`), the HTTP listener (`http`), the status document (`status`), the
loop watchdog (`watchdog`), GC pauses (`gc_pauses`), Prometheus scrape targets
(`targets`) and the generated metrics reference (`reference`)."""
