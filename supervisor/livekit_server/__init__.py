"""The LiveKit server this project talks to: the local one it finds, builds and runs
(`server`), the record a running one leaves for other commands (`record`), the
credentials for it (`credentials`) and calls to its API (`access`)."""
