// Runs payherald's static/dashboard.js in node against a minimal DOM: a #feed table with
// the data attributes the feed page gives it, and an EventSource that delivers the
// EventSummary messages given as JSON on standard input. Prints the table body's rows as
// HTML. Only what the script uses is modelled.
"use strict";

const fs = require("fs");
const vm = require("vm");

const [scriptPath, settingsJson] = process.argv.slice(2);
const messages = JSON.parse(fs.readFileSync(0, "utf8"));

function kebab(name) {
  return name.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase());
}

class Text {
  constructor(value) {
    this.value = String(value);
    this.parent = null;
  }
  html() {
    return this.value.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }
}

class Element {
  constructor(tag) {
    this.tagName = tag.toUpperCase();
    this.attributes = new Map();
    this.childNodes = [];
    this.parent = null;
    const element = this;
    this.dataset = new Proxy({}, {
      get: (_, key) => element.attributes.get("data-" + kebab(String(key))),
      set: (_, key, value) => {
        element.attributes.set("data-" + kebab(String(key)), String(value));
        return true;
      },
    });
    this.classList = {
      contains: (name) => (element.className || "").split(" ").includes(name),
    };
  }
  get className() { return this.attributes.get("class") || ""; }
  set className(value) { this.attributes.set("class", String(value)); }
  get firstChild() { return this.childNodes[0] || null; }
  set textContent(value) { this.childNodes = []; this.appendChild(new Text(value)); }
  setAttribute(name, value) { this.attributes.set(name, String(value)); }
  appendChild(node) {
    node.parent = this;
    this.childNodes.push(node);
    return node;
  }
  insertBefore(node, before) {
    node.parent = this;
    const at = before ? this.childNodes.indexOf(before) : -1;
    if (at < 0) this.childNodes.push(node); else this.childNodes.splice(at, 0, node);
    return node;
  }
  replaceWith(node) {
    const siblings = this.parent.childNodes;
    node.parent = this.parent;
    siblings[siblings.indexOf(this)] = node;
  }
  querySelectorAll(selector) {
    const [tag, cls] = selector.split(".");
    return this.childNodes.filter(
      (n) => n instanceof Element && n.tagName === tag.toUpperCase() && n.classList.contains(cls)
    );
  }
  html() {
    const attrs = [...this.attributes].map(
      ([k, v]) => ` ${k}="${v.replace(/&/g, "&amp;").replace(/"/g, "&quot;").replace(/</g, "&lt;").replace(/>/g, "&gt;")}"`
    );
    return `<${this.tagName.toLowerCase()}${attrs.join("")}>` +
      this.childNodes.map((n) => n.html()).join("") + `</${this.tagName.toLowerCase()}>`;
  }
}

const table = new Element("table");
for (const [key, value] of Object.entries(JSON.parse(settingsJson))) {
  table.dataset[key] = value;
}
const body = new Element("tbody");
table.tBodies = [body];
const listeners = [];
const opened = [];

class EventSource {
  constructor(url) { opened.push(url); }
  addEventListener(name, listener) { listeners.push([name, listener]); }
}

const context = {
  document: {
    getElementById: (id) => (id === "feed" ? table : null),
    createElement: (tag) => new Element(tag),
    createTextNode: (value) => new Text(value),
  },
  Intl,
  Date,
  JSON,
  String,
  Boolean,
  isNaN,
  encodeURIComponent,
};
context.window = { EventSource };
context.EventSource = EventSource;
vm.runInNewContext(fs.readFileSync(scriptPath, "utf8"), context);
for (const message of messages) {
  for (const [name, listener] of listeners) {
    if (name === "event") listener({ data: JSON.stringify(message) });
  }
}
process.stdout.write(JSON.stringify({ opened, rows: body.childNodes.map((n) => n.html()) }));
