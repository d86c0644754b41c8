"""The LiveKit server this project talks to: the local one it finds, builds and runs
(`server`), the record a running one leaves for other commands (`record`), where a
config's server and credentials come from, the environment or that local server
(`source`), and tokens and calls to a server's API (`access`)."""
