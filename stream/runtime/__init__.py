"""Runtime: the Faust app that hosts the agents, and the embedded broker."""
