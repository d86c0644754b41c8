"""Rooms on demand: the session with LiveKit's agent dispatch (`agent_worker`), the jobs
it brings and their bots (`jobs`), whether to take one (`admission`), and the hosts that
share the work and bring a dead host's rooms back (`fleet`)."""
