"""Local fakes of the HTTP APIs Bosun talks to; no test touches the network."""
