"""What tests share and nothing else: simulated participants (`participants`, `echo`),
room trees (`rooms`), the `supervisor` command as a child process (`cli_process`,
`workers`), kernel probes (`probes`), a real Prometheus (`prometheus`), and the bots
that child processes run by name (`tests.helpers.bots:NAME`, `blocking_bot`,
`crashing_bot`, `goodbye_bot`). Test modules import helpers from here only, never from
one another."""
