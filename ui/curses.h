/*
 * curses.h: the one place ui/ includes curses from (STYLE.md item 5).
 * Wide-character ncurses is required: the plots use UTF-8 block
 * characters, and the screen tests read cells back as wide characters.
 * Only ui/ (and the screen tests) include this header; core/, sessions/
 * and src/cmd_*.c never do (tests/layering.sh checks it).
 */
#ifndef MASQ_UI_CURSES_H
#define MASQ_UI_CURSES_H

#ifndef NCURSES_WIDECHAR
#define NCURSES_WIDECHAR 1
#endif

#if defined(__has_include)
#if __has_include(<ncursesw/curses.h>)
#include <ncursesw/curses.h>
#else
#include <curses.h>
#endif
#else
#include <curses.h>
#endif

#endif
