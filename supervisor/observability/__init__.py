"""What a running supervisor tells about itself: Prometheus collectors (`metrics`), the
HTTP listener that serves them with `/status`, `/readyz` and the try-it page (`http`),
the status document (`status`), the loop watchdog (`watchdog`), GC pauses
(`gc_pauses`) and Prometheus scrape targets (`targets`)."""
