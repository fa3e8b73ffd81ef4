// The OpenAPI 3.0 description of pxadmind's API, served at /v1/openapi.json.
// tests/unit/test_admin.cpp checks that it lists exactly the operations of api.cpp.
#include "admin/api.h"

namespace px::admin {

const char* openapi_document() {
  return R"JSON({
  "openapi": "3.0.3",
  "info": {"title": "pxadmind", "version": "1",
           "description": "The px control plane. Every change is validated, atomic (one store transaction), versioned (ETag / If-Match) and audited. Errors are {\"error\": {\"status\", \"message\", \"field\"}}."},
  "servers": [{"url": "http://localhost"}],
  "components": {
    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
      "description": "Required on TCP listeners; the unix socket authenticates by peer uid."}},
    "parameters": {
      "name": {"name": "name", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}},
      "username": {"name": "username", "in": "path", "required": true, "schema": {"type": "string"}},
      "ifMatch": {"name": "If-Match", "in": "header", "required": false, "schema": {"type": "string"},
                  "description": "The version (ETag) the change is based on; 412 when stale."}
    },
    "schemas": {
      "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
        "status": {"type": "integer"}, "message": {"type": "string"}, "field": {"type": "string"},
        "conflict": {"type": "string"}, "current_version": {"type": "integer"}}}}},
      "Upstream": {"oneOf": [{"type": "string", "example": "http://10.0.0.5:8080"},
        {"type": "object", "properties": {"url": {"type": "string"}, "weight": {"type": "integer", "minimum": 1, "maximum": 1000}}}]},
      "Route": {"type": "object", "required": ["name", "hosts", "upstreams"], "properties": {
        "name": {"type": "string"}, "hosts": {"type": "array", "items": {"type": "string"}},
        "path": {"type": "string", "default": "/"}, "strip_path": {"type": "boolean"},
        "upstreams": {"type": "array", "items": {"$ref": "#/components/schemas/Upstream"}},
        "lb": {"type": "string", "enum": ["round_robin", "least_conn", "ip_hash"]},
        "enabled": {"type": "boolean"}, "connect_timeout_ms": {"type": "integer"}, "read_timeout_ms": {"type": "integer"},
        "max_body_size": {"type": "integer"},
        "health_check": {"type": "object", "properties": {"path": {"type": "string"}, "interval_ms": {"type": "integer"},
          "timeout_ms": {"type": "integer"}, "healthy": {"type": "integer"}, "unhealthy": {"type": "integer"}}},
        "filters": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}, "config": {"type": "object"}}}},
        "tls": {"type": "string", "description": "auto, off, or a stored certificate's name"},
        "upstream_tls": {"type": "object"}, "access_log": {"type": "boolean"},
        "passthrough": {"type": "boolean", "description": "SNI passthrough: TLS for the hosts goes unread to tcp:// upstreams"},
        "record": {"type": "object", "description": "pxd records the next count requests (heads, masked) for pxctl filter test",
          "properties": {"count": {"type": "integer", "maximum": 10000}, "mask": {"type": "array", "items": {"type": "string"}}, "id": {"type": "string"}}},
        "version": {"type": "integer", "readOnly": true}}},
      "Stream": {"type": "object", "required": ["name", "listen", "upstreams"], "description": "TCP or UDP proxying; pxd.conf(5) STREAMS has every field", "properties": {
        "name": {"type": "string"}, "listen": {"type": "string", "description": "ADDRESS:PORT, optionally /udp"},
        "protocol": {"type": "string", "enum": ["tcp", "udp"]},
        "upstreams": {"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "object", "properties": {"url": {"type": "string"}, "weight": {"type": "integer"}}}]}},
        "lb": {"type": "string", "enum": ["round_robin", "least_conn", "hash"]}, "enabled": {"type": "boolean"},
        "connect_timeout_ms": {"type": "integer"}, "idle_timeout_ms": {"type": "integer"}, "max_lifetime_ms": {"type": "integer"},
        "max_connections": {"type": "integer"}, "rate_bytes_per_s": {"type": "integer"}, "acl": {"type": "string"},
        "proxy_protocol": {"type": "string", "enum": ["off", "v1", "v2"]}, "accept_proxy": {"type": "boolean"}, "tls": {"type": "string"},
        "hosts": {"type": "array", "items": {"type": "string"}}, "health_check": {"type": "object"},
        "access_log": {"type": "boolean"}, "version": {"type": "integer"}}},
      "Acl": {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string"},
        "rules": {"type": "array", "items": {"type": "object", "properties": {
          "action": {"type": "string", "enum": ["allow", "deny"]}, "cidr": {"type": "string"}}}},
        "default": {"type": "string", "enum": ["allow", "deny"]},
        "users": {"type": "array", "items": {"type": "object", "properties": {"username": {"type": "string"},
          "hash": {"type": "string", "description": "yescrypt ($y$) or bcrypt ($2b$)"}}}},
        "satisfy": {"type": "string", "enum": ["any", "all"]}, "realm": {"type": "string"},
        "pass_authorization": {"type": "boolean"}, "version": {"type": "integer", "readOnly": true}}},
      "Config": {"type": "object", "properties": {"schema": {"type": "integer"}, "generation": {"type": "integer"},
        "routes": {"type": "array", "items": {"$ref": "#/components/schemas/Route"}},
        "acls": {"type": "array", "items": {"$ref": "#/components/schemas/Acl"}}}}
    },
    "responses": {
      "Error": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    }
  },
  "security": [{"bearer": []}],
  "paths": {
    "/v1/routes": {
      "get": {"operationId": "listRoutes", "responses": {"200": {"description": "every route; one a running pxd does not fully serve has errors: [{host (in a fleet), pxd (this host's status file), error}]"}}},
      "post": {"operationId": "createRoute", "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Route"}}}},
               "responses": {"201": {"description": "created"}, "409": {"$ref": "#/components/responses/Error"}, "422": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/routes/{name}": {
      "parameters": [{"$ref": "#/components/parameters/name"}],
      "get": {"operationId": "getRoute", "responses": {"200": {"description": "the route, with errors as listed; ETag is its version"}, "404": {"$ref": "#/components/responses/Error"}}},
      "put": {"operationId": "putRoute", "parameters": [{"$ref": "#/components/parameters/ifMatch"}],
              "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Route"}}}},
              "responses": {"200": {"description": "replaced"}, "201": {"description": "created"}, "409": {"$ref": "#/components/responses/Error"}, "412": {"$ref": "#/components/responses/Error"}, "422": {"$ref": "#/components/responses/Error"}}},
      "patch": {"operationId": "patchRoute", "parameters": [{"$ref": "#/components/parameters/ifMatch"}],
                "requestBody": {"content": {"application/merge-patch+json": {"schema": {"type": "object"}}}},
                "responses": {"200": {"description": "changed"}, "404": {"$ref": "#/components/responses/Error"}, "409": {"$ref": "#/components/responses/Error"}, "412": {"$ref": "#/components/responses/Error"}, "422": {"$ref": "#/components/responses/Error"}}},
      "delete": {"operationId": "deleteRoute", "parameters": [{"$ref": "#/components/parameters/ifMatch"}],
                 "responses": {"204": {"description": "removed"}, "404": {"$ref": "#/components/responses/Error"}, "412": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/acls": {
      "get": {"operationId": "listAcls", "responses": {"200": {"description": "every access list"}}},
      "post": {"operationId": "createAcl", "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Acl"}}}},
               "responses": {"201": {"description": "created"}, "409": {"$ref": "#/components/responses/Error"}, "422": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/acls/{name}": {
      "parameters": [{"$ref": "#/components/parameters/name"}],
      "get": {"operationId": "getAcl", "responses": {"200": {"description": "the access list"}, "404": {"$ref": "#/components/responses/Error"}}},
      "put": {"operationId": "putAcl", "parameters": [{"$ref": "#/components/parameters/ifMatch"}],
              "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Acl"}}}},
              "responses": {"200": {"description": "replaced"}, "201": {"description": "created"}, "412": {"$ref": "#/components/responses/Error"}, "422": {"$ref": "#/components/responses/Error"}}},
      "patch": {"operationId": "patchAcl", "parameters": [{"$ref": "#/components/parameters/ifMatch"}],
                "requestBody": {"content": {"application/merge-patch+json": {"schema": {"type": "object"}}}},
                "responses": {"200": {"description": "changed"}, "404": {"$ref": "#/components/responses/Error"}, "412": {"$ref": "#/components/responses/Error"}, "422": {"$ref": "#/components/responses/Error"}}},
      "delete": {"operationId": "deleteAcl", "parameters": [{"$ref": "#/components/parameters/ifMatch"}],
                 "responses": {"204": {"description": "removed"}, "404": {"$ref": "#/components/responses/Error"}, "409": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/streams": {
      "get": {"operationId": "listStreams", "responses": {"200": {"description": "every stream (TCP and UDP proxying); one a running pxd cannot open has errors: [{host (in a fleet), pxd (this host's status file), error}]"}}},
      "post": {"operationId": "createStream", "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Stream"}}}},
               "responses": {"201": {"description": "created"}, "409": {"$ref": "#/components/responses/Error"}, "422": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/streams/{name}": {
      "parameters": [{"$ref": "#/components/parameters/name"}],
      "get": {"operationId": "getStream", "responses": {"200": {"description": "the stream, with errors as listed"}, "404": {"$ref": "#/components/responses/Error"}}},
      "put": {"operationId": "putStream", "parameters": [{"$ref": "#/components/parameters/ifMatch"}],
              "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Stream"}}}},
              "responses": {"200": {"description": "replaced"}, "201": {"description": "created"}, "409": {"$ref": "#/components/responses/Error"}, "412": {"$ref": "#/components/responses/Error"}, "422": {"$ref": "#/components/responses/Error"}}},
      "patch": {"operationId": "patchStream", "parameters": [{"$ref": "#/components/parameters/ifMatch"}],
                "requestBody": {"content": {"application/merge-patch+json": {"schema": {"type": "object"}}}},
                "responses": {"200": {"description": "changed"}, "404": {"$ref": "#/components/responses/Error"}, "409": {"$ref": "#/components/responses/Error"}, "412": {"$ref": "#/components/responses/Error"}, "422": {"$ref": "#/components/responses/Error"}}},
      "delete": {"operationId": "deleteStream", "parameters": [{"$ref": "#/components/parameters/ifMatch"}],
                 "responses": {"204": {"description": "removed"}, "404": {"$ref": "#/components/responses/Error"}, "412": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/acls/{name}/users": {
      "parameters": [{"$ref": "#/components/parameters/name"}],
      "post": {"operationId": "addAclUser", "requestBody": {"content": {"application/json": {"schema": {"type": "object",
                 "properties": {"username": {"type": "string"}, "password": {"type": "string", "description": "hashed with yescrypt; never stored"}}}}}},
               "responses": {"200": {"description": "the access list"}, "404": {"$ref": "#/components/responses/Error"}, "422": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/acls/{name}/users/{username}": {
      "parameters": [{"$ref": "#/components/parameters/name"}, {"$ref": "#/components/parameters/username"}],
      "delete": {"operationId": "removeAclUser", "responses": {"200": {"description": "the access list"}, "404": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/config": {
      "get": {"operationId": "exportConfig",
              "parameters": [{"name": "include_keys", "in": "query", "schema": {"type": "boolean"}, "description": "include certificates' private keys"}],
              "responses": {"200": {"description": "the whole configuration",
               "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Config"}}}}}},
      "post": {"operationId": "importConfig",
               "parameters": [{"name": "mode", "in": "query", "schema": {"type": "string", "enum": ["merge", "replace"]}},
                              {"name": "dry_run", "in": "query", "schema": {"type": "boolean"}}],
               "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Config"}}}},
               "responses": {"200": {"description": "the diff (applied unless dry_run)"}, "409": {"$ref": "#/components/responses/Error"}, "422": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/audit": {
      "get": {"operationId": "audit",
              "parameters": [{"name": "resource", "in": "query", "schema": {"type": "string"}, "description": "route/shop, or a prefix ending in /"},
                             {"name": "action", "in": "query", "schema": {"type": "string"}},
                             {"name": "credential", "in": "query", "schema": {"type": "string"}},
                             {"name": "since", "in": "query", "schema": {"type": "integer"}},
                             {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 100}}],
              "responses": {"200": {"description": "audit records, oldest first"}}}
    },
    "/v1/routes/{name}/records": {
      "parameters": [{"$ref": "#/components/parameters/name"}],
      "get": {"operationId": "routeRecords", "description": "the requests pxd recorded for the route (route.record), oldest first: the input of pxctl filter test",
              "responses": {"200": {"description": "{records: [{method, uri, host, headers, client, tls, request_id, response}]}"}}}
    },
    "/v1/filters/{name}/check": {
      "parameters": [{"$ref": "#/components/parameters/name"}],
      "post": {"operationId": "checkFilterConfig", "description": "A filter's config, checked as a route write checks it: the filter exists (in a running pxd, or built in), the config has the shape the filter declares, its prepare accepts it, and the access lists it names are stored. Nothing is written.",
               "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
               "responses": {"200": {"description": "{filter, ok: true}"}, "422": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/status": {
      "get": {"operationId": "status", "responses": {"200": {"description": "store generation and what each pxd applied; in a fleet, this host's view of it (fleet)"}}}
    },
    "/v1/fleet": {
      "get": {"operationId": "fleet", "responses": {"200": {"description": "in a fleet (pxadmind --etcd): {self: this host's view, revision: the fleet's last write, hosts: [each host's published status with its lag]}, or error when etcd is away"}, "404": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/traffic": {
      "get": {"operationId": "traffic", "responses": {"200": {"description": "{time_ms, pxd_read, routes: {name: {requests, errors}}}: counters summed over running pxds with metrics_listen"}}}
    },
    "/v1/cache/purge": {
      "post": {"operationId": "purgeCache", "description": "Drops a route's stored responses whose target matches path ('*' any run of characters), or all of them: every pxd treats them as absent from now on. Audited (cache.purge).",
               "requestBody": {"content": {"application/json": {"schema": {"type": "object", "required": ["route"],
                 "properties": {"route": {"type": "string"}, "path": {"type": "string"}, "all": {"type": "boolean"}}}}}},
               "responses": {"202": {"description": "{route, pattern, at}"}, "404": {"$ref": "#/components/responses/Error"}, "409": {"$ref": "#/components/responses/Error"}, "422": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/cache/stats": {
      "get": {"operationId": "cacheStats", "parameters": [{"name": "route", "in": "query", "schema": {"type": "string"}}],
              "responses": {"200": {"description": "{pxd: [{dir, max_bytes, bytes, objects, stored, stored_bytes, evictions, coalesced, errors, routes | route and requests: {hit, stale, revalidated, miss, bypass, refresh, served_bytes}}]}"},
                            "503": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/users": {
      "get": {"operationId": "listUsers", "responses": {"200": {"description": "dashboard accounts: name, role, totp (never hashes)"}}},
      "post": {"operationId": "createUser", "requestBody": {"content": {"application/json": {"schema": {"type": "object", "required": ["name", "password"],
                 "properties": {"name": {"type": "string"}, "password": {"type": "string", "minLength": 10}, "role": {"type": "string", "enum": ["admin", "viewer"]}}}}}},
               "responses": {"201": {"description": "created (the password is stored hashed)"}, "409": {"$ref": "#/components/responses/Error"}, "422": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/users/{name}": {
      "parameters": [{"$ref": "#/components/parameters/name"}],
      "delete": {"operationId": "deleteUser", "responses": {"204": {"description": "removed; its sessions end"}, "404": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/session": {
      "get": {"operationId": "getSession", "description": "The dashboard listener (pxadmind --ui) only.",
              "responses": {"200": {"description": "{user, role, csrf, totp}: send csrf back as X-CSRF-Token on every change"},
                            "401": {"description": "not logged in; setup_required says whether the first admin is still to be made"}}},
      "post": {"operationId": "login", "requestBody": {"content": {"application/json": {"schema": {"type": "object", "required": ["user", "password"],
                 "properties": {"user": {"type": "string"}, "password": {"type": "string"}, "totp": {"type": "string"}, "recovery": {"type": "string"}}}}}},
               "responses": {"200": {"description": "logged in: Set-Cookie px_session (HttpOnly, SameSite=Strict)"}, "401": {"$ref": "#/components/responses/Error"},
                             "429": {"description": "too many failed logins from this address or for this account (Retry-After)"}}},
      "delete": {"operationId": "logout", "responses": {"204": {"description": "the session ended; the cookie is cleared"}}}
    },
    "/v1/session/setup": {
      "post": {"operationId": "setup", "description": "First run: the setup token pxadmind logged makes the first admin, once.",
               "requestBody": {"content": {"application/json": {"schema": {"type": "object", "required": ["token", "user", "password"],
                 "properties": {"token": {"type": "string"}, "user": {"type": "string"}, "password": {"type": "string"}}}}}},
               "responses": {"200": {"description": "the admin exists and is logged in"}, "403": {"$ref": "#/components/responses/Error"}, "409": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/session/totp": {
      "post": {"operationId": "totpBegin", "responses": {"200": {"description": "{secret, uri}: a new TOTP secret (RFC 6238) to confirm"}}}
    },
    "/v1/session/totp/confirm": {
      "post": {"operationId": "totpConfirm", "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {"code": {"type": "string"}}}}}},
               "responses": {"200": {"description": "TOTP on; {recovery_codes}, shown once"}, "422": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/tokens": {
      "get": {"operationId": "listTokens", "responses": {"200": {"description": "token names (never secrets)"}}},
      "post": {"operationId": "createToken", "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {"name": {"type": "string"}}}}}},
               "responses": {"201": {"description": "the token, shown once"}, "409": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/tokens/{name}": {
      "parameters": [{"$ref": "#/components/parameters/name"}],
      "delete": {"operationId": "deleteToken", "responses": {"204": {"description": "revoked"}, "404": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/traces": {
      "post": {"operationId": "createTrace", "description": "pxctl trace: an id and a token (valid 60 s) for the X-Px-Trace header; pxd records the path of a request that carries it",
               "responses": {"201": {"description": "id, header, token, expires"}, "409": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/traces/{id}": {
      "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
      "get": {"operationId": "takeTrace", "description": "the traced request's record, once it ended (then removed): route and why, filters per phase with verdict and time, peers and attempts, upstream status, time per phase",
              "responses": {"200": {"description": "the record"}, "404": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/certs": {
      "get": {"operationId": "listCerts", "responses": {"200": {"description": "certificates: names, issuer, not_after, days_left, source, key_type (never keys); for those ACME keeps (managed: acme): status, last_attempt, last_error (the CA's problem document), next_attempt, failures, renewal_window"}}}
    },
    "/v1/certs/{name}/renew": {
      "parameters": [{"$ref": "#/components/parameters/name"}],
      "post": {"operationId": "renewCert", "description": "asks pxadmind's ACME manager to renew a certificate it keeps (a route has tls auto for it) now, within the CA's limits; poll GET /v1/certs/{name} for the outcome",
               "responses": {"202": {"description": "renewal requested"}, "404": {"$ref": "#/components/responses/Error"}, "409": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/certs/{name}": {
      "parameters": [{"$ref": "#/components/parameters/name"}],
      "get": {"operationId": "getCert", "responses": {"200": {"description": "one certificate with its PEM chain (never the key)"}, "404": {"$ref": "#/components/responses/Error"}}},
      "put": {"operationId": "putCert", "description": "checked: certificates only in cert (leaf first, then each issuer), a private key matching the leaf in key, not expired, DNS names in subjectAltName",
              "requestBody": {"content": {"application/json": {"schema": {"type": "object", "required": ["cert", "key"], "properties": {"cert": {"type": "string"}, "key": {"type": "string"}}}}}},
              "responses": {"200": {"description": "replaced"}, "201": {"description": "added"}, "422": {"$ref": "#/components/responses/Error"}}},
      "delete": {"operationId": "deleteCert", "responses": {"204": {"description": "removed"}, "404": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/acme/challenges/{token}": {
      "parameters": [{"name": "token", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,256}$"}}],
      "put": {"operationId": "putAcmeChallenge", "description": "pxd's acme filter answers /.well-known/acme-challenge/{token} with it, for any host",
              "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {"key_authorization": {"type": "string"}}}}}},
              "responses": {"204": {"description": "stored"}, "422": {"$ref": "#/components/responses/Error"}}},
      "delete": {"operationId": "deleteAcmeChallenge", "responses": {"204": {"description": "removed"}, "404": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/openapi.json": {
      "get": {"operationId": "openapi", "security": [], "responses": {"200": {"description": "this document"}}}
    }
  }
})JSON";
}

}  // namespace px::admin
