// Reads what main.py wrote and prints a one-line summary.
const report = require("./report.json");
console.log(`node ${process.version}: ${report.squares.length} squares, largest ${Math.max(...report.squares)}`);
