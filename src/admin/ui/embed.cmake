# Embeds ui/status.html into the binary as a raw string literal in a generated
# .cpp in the build dir (CMake only: no xxd, no build step of its own).
# Editing status.html re-runs the configure step, which regenerates the .cpp.
# Sets CANARYD_UI_SOURCES for the server library.
set(CANARYD_UI_HTML_FILE ${CMAKE_CURRENT_LIST_DIR}/status.html)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
  ${CANARYD_UI_HTML_FILE} ${CMAKE_CURRENT_LIST_DIR}/status_page.cpp.in)
file(READ ${CANARYD_UI_HTML_FILE} CANARYD_UI_HTML)
set(CANARYD_UI_DELIM "canaryd_ui")
string(FIND "${CANARYD_UI_HTML}" ")${CANARYD_UI_DELIM}\"" delim_at)
if(NOT delim_at EQUAL -1)
  message(FATAL_ERROR "${CANARYD_UI_HTML_FILE} contains the raw string delimiter )${CANARYD_UI_DELIM}\"")
endif()
configure_file(${CMAKE_CURRENT_LIST_DIR}/status_page.cpp.in ${CMAKE_CURRENT_BINARY_DIR}/ui_status_page.cpp @ONLY)
set(CANARYD_UI_SOURCES ${CMAKE_CURRENT_LIST_DIR}/ui.cpp ${CMAKE_CURRENT_BINARY_DIR}/ui_status_page.cpp)
