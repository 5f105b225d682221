# Precondition of the browser test (cmake -P): node >= 18 (Debian 12's own
# nodejs is 18), playwright-core as pinned in package.json (`make test` runs
# npm ci for it), and Debian's chromium (scripts/install-deps.sh installs it).
if(NOT NODE)
  message(FATAL_ERROR "node not found: install Node.js >= 18 (scripts/install-deps.sh), then re-run cmake")
endif()
execute_process(COMMAND ${NODE} -p process.versions.node OUTPUT_VARIABLE node_version
  OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE node_rc)
if(NOT node_rc EQUAL 0 OR node_version VERSION_LESS 18)
  message(FATAL_ERROR "${NODE} is Node.js '${node_version}': the browser test needs Node.js >= 18 "
    "(scripts/install-deps.sh installs Debian's nodejs)")
endif()
if(NOT EXISTS "${BROWSER_DIR}/node_modules/playwright-core/package.json")
  message(FATAL_ERROR
    "${BROWSER_DIR}/node_modules is missing (playwright-core is not installed): run npm ci --prefix tests/browser")
endif()
file(READ "${BROWSER_DIR}/node_modules/playwright-core/package.json" pkg)
string(JSON installed GET "${pkg}" version)
file(READ "${BROWSER_DIR}/package.json" want_pkg)
string(JSON wanted GET "${want_pkg}" dependencies playwright-core)
if(NOT installed STREQUAL wanted)
  message(FATAL_ERROR "${BROWSER_DIR}/node_modules has playwright-core ${installed}, package.json pins ${wanted}: "
    "run npm ci --prefix tests/browser")
endif()
if(NOT EXISTS /usr/bin/chromium AND NOT DEFINED ENV{CANARYD_CHROMIUM})
  message(FATAL_ERROR "/usr/bin/chromium is missing: the browser test needs Debian's chromium package "
    "(scripts/install-deps.sh installs it: apt-get install chromium)")
endif()
message(STATUS "node ${node_version}, playwright-core ${installed} and chromium found")
