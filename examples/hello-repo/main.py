"""A tiny repo for CrowNest's quickstart: Python computes, Node summarizes."""
import json
import platform

numbers = list(range(1, 11))
result = {"python": platform.python_version(), "sum": sum(numbers), "squares": [n * n for n in numbers]}
with open("report.json", "w") as f:
    json.dump(result, f, indent=2)
print(f"python {result['python']}: sum of 1..10 is {result['sum']}")
