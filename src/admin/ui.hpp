// The rollout status page served at GET /admin/ui: one self-contained HTML
// file (src/server/ui/status.html: inline CSS, vanilla JS, SVG charts drawn by
// its own code, no external URL) embedded into the binary at build time by
// CMake (ui/embed.cmake, ui/ui.cpp). The page carries no data: it asks for the admin
// token and reads everything from the admin JSON API with it.
#pragma once

#include <string>
#include <string_view>

namespace canaryd::admin {

// The page, byte for byte as in status.html.
std::string_view status_page_html();

// The Content-Security-Policy it is served with: nothing but the page's own
// inline <script> and <style> (by SHA-256, so an injected script cannot run)
// and fetches to the same origin; no framing, no forms, no base URL.
const std::string& status_page_csp();

}  // namespace canaryd::admin
