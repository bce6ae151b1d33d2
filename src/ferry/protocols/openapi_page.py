"""The `/docs` page: ferry's OpenAPI description, read from `/openapi.json` and listed by
tag, each operation with its parameters, bodies and answers, and the schemas below.

Self-contained on purpose (no Swagger UI from a CDN): it must work offline and behind
firewalls, like the status page. The script is small and only reads the JSON.
"""

DOCS_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ferry API</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; }
details { margin: .3em 0; border: 1px solid #ddd; border-radius: 4px; padding: .3em .6em; }
summary { cursor: pointer; }
.method { display: inline-block; width: 4.5em; font-weight: bold; font-family: monospace; }
.get { color: #0a6; } .post { color: #06c; } .delete { color: #c30; }
code, pre { font-family: ui-monospace, monospace; font-size: 12.5px; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; }
#error { color: #c00; }
</style>
</head>
<body>
<h1 id="title">ferry API</h1>
<p id="description"></p>
<p>The machine-readable description: <a href="{{OPENAPI_PATH}}"><code>{{OPENAPI_PATH}}</code></a>
(OpenAPI 3.1).</p>
<p id="error"></p>
<div id="operations"></div>
<h2>Schemas</h2>
<div id="schemas"></div>
<script>
"use strict";
function element(tag, attributes, children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, value);
  for (const child of children || []) {
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}
function json(value) { return element("pre", {}, [JSON.stringify(value, null, 2)]); }
function operation(path, method, op) {
  const parts = [];
  for (const p of op.parameters || []) {
    parts.push(element("div", {}, ["path parameter ", element("code", {}, [p.name]), " ",
      element("code", {}, [JSON.stringify(p.schema)])]));
  }
  if (op.requestBody) {
    parts.push(element("div", {}, ["request body:"]));
    for (const [media, body] of Object.entries(op.requestBody.content || {})) {
      parts.push(element("div", {}, [element("code", {}, [media])]));
      if (body.schema) parts.push(json(body.schema));
    }
  }
  for (const [code, answer] of Object.entries(op.responses || {})) {
    const media = Object.keys(answer.content || {}).join(", ") || "no body";
    parts.push(element("div", {"class": "response"}, [element("b", {}, [code]), " ",
      answer.description || "", " (", media, ")"]));
  }
  return element("details", {"class": "operation", "data-path": path}, [
    element("summary", {}, [element("span", {"class": "method " + method}, [method.toUpperCase()]),
      element("code", {}, [path]), " ", op.summary || ""]),
    ...parts,
  ]);
}
async function show() {
  const response = await fetch("{{OPENAPI_PATH}}");
  const spec = await response.json();
  document.getElementById("title").textContent = spec.info.title + " " + spec.info.version;
  document.getElementById("description").textContent = spec.info.description || "";
  const byTag = new Map((spec.tags || []).map(t => [t.name, []]));
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const tag = (op.tags || ["other"])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(operation(path, method, op));
    }
  }
  const operations = document.getElementById("operations");
  for (const [tag, items] of byTag) {
    operations.append(element("h2", {}, [tag]), ...items);
  }
  const schemas = document.getElementById("schemas");
  for (const [name, schema] of Object.entries((spec.components || {}).schemas || {})) {
    schemas.append(element("details", {"class": "schema"}, [
      element("summary", {}, [element("code", {}, [name])]), json(schema)]));
  }
}
show().catch(error => { document.getElementById("error").textContent = String(error); });
</script>
</body>
</html>
"""
