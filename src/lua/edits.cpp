// Header edits (req:set_header and friends) applied to a head: to a list of
// fields px made itself, or written through the HTTP/1 codec for a parsed head.
#include "core/strings.h"
#include "http/h1.h"
#include "lua/internal.h"

namespace px::lua {

std::vector<std::pair<std::string, std::string>> apply_edits(
    const std::vector<std::pair<std::string, std::string>>& orig, const std::vector<HeaderEdit>& edits) {
  std::vector<std::string> names;
  for (const auto& e : edits) {
    bool seen = false;
    for (const auto& n : names) seen = seen || iequals(n, e.name);
    if (!seen) names.push_back(e.name);
  }
  auto is_edited = [&](std::string_view n) {
    for (const auto& x : names)
      if (iequals(x, n)) return true;
    return false;
  };
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& h : orig)
    if (!is_edited(h.first)) out.push_back(h);
  for (const auto& name : names) {
    std::vector<std::string> vals;
    for (const auto& h : orig)
      if (iequals(h.first, name)) vals.push_back(h.second);
    for (const auto& e : edits)
      if (iequals(e.name, name)) apply_edit(vals, e);
    for (auto& v : vals) out.emplace_back(name, std::move(v));
  }
  return out;
}

void append_edited(http::HeadWriter& out, const http::Head& h, const std::vector<HeaderEdit>& edits) {
  each_edited(
      h, edits, [](void* o, std::string_view n, std::string_view v) { static_cast<http::HeadWriter*>(o)->field(n, v); },
      &out);
}

void each_edited(const http::Head& h, const std::vector<HeaderEdit>& edits, FieldFn field, void* ctx) {
  auto line = [field, ctx](std::string_view n, std::string_view v) { field(ctx, n, v); };
  for (size_t k = 0; k < edits.size(); k++) {
    const std::string& name = edits[k].name;
    bool first = true;
    for (size_t j = 0; j < k && first; j++) first = !iequals(edits[j].name, name);
    if (!first) continue;  // this name was handled at its first edit
    // The last set or remove of the name decides where its values start.
    size_t base = edits.size();
    for (size_t j = k; j < edits.size(); j++)
      if (edits[j].mode != 1 && iequals(edits[j].name, name)) base = j;
    size_t adds_from = k;
    if (base == edits.size()) {
      for (size_t i = 0; i < h.headers.size(); i++)
        if (iequals(h.name(i), name)) line(name, h.value(i));
    } else {
      if (edits[base].mode == 0) line(name, edits[base].value);
      adds_from = base + 1;
    }
    for (size_t j = adds_from; j < edits.size(); j++)
      if (edits[j].mode == 1 && iequals(edits[j].name, name)) line(name, edits[j].value);
  }
}

}  // namespace px::lua
