"""Above the services: the `lidroute` command, the local stack, evaluation, benchmarks, model building."""
