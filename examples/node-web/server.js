// A tiny web app with one npm dependency (ms, pure JavaScript): GET / says hello, reading PORT.
const http = require("http");
const ms = require("ms");

const port = Number(process.env.PORT || 8080);
http
  .createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end(`hello from node ${process.versions.node}, up ${ms(Math.round(process.uptime() * 1000))}\n`);
  })
  .listen(port, "0.0.0.0");
