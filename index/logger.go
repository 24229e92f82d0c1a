package index

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// slogLogger sends badger's chatter to slog below debug level (LevelTrace):
// badger logs routine events (tables opened, compactions) at info and
// warning, dozens per command, which would drown --log-level debug. Its
// errors stay at debug.
type slogLogger struct{}

func (slogLogger) Errorf(f string, a ...any)   { logBadger("error", f, a) }
func (slogLogger) Warningf(f string, a ...any) { logBadger("warning", f, a) }
func (slogLogger) Infof(f string, a ...any)    { logBadger("info", f, a) }
func (slogLogger) Debugf(f string, a ...any)   { logBadger("debug", f, a) }

// LevelTrace is below debug: what only a --log-level trace run shows.
const LevelTrace = slog.LevelDebug - 4

func logBadger(level, format string, args []any) {
	ctx := context.Background()
	lvl := LevelTrace
	if level == "error" {
		lvl = slog.LevelDebug
	}
	if !slog.Default().Enabled(ctx, lvl) {
		return // skip formatting what nobody reads
	}
	msg := strings.TrimSpace(fmt.Sprintf(format, args...))
	slog.Default().Log(ctx, lvl, msg, "component", "badger", "badger_level", level)
}
