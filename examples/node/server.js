// A Node.js app without dependencies: npm's registry is not needed to build it.
const http = require("http");
const port = process.env.PORT || 5000;
http.createServer((req, res) => {
  res.setHeader("content-type", "text/plain");
  res.end(`hello from node ${process.version} on ${process.env.KBUILD_APP || "kbuild"}\n`);
}).listen(port, () => console.log(`listening on ${port}`));
