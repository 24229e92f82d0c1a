package index

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// slogLogger sends badger's chatter to slog at debug level: badger logs
// routine events (tables opened, compactions) at info and warning, which
// would otherwise land on every command's stderr.
type slogLogger struct{}

func (slogLogger) Errorf(f string, a ...any)   { logBadger("error", f, a) }
func (slogLogger) Warningf(f string, a ...any) { logBadger("warning", f, a) }
func (slogLogger) Infof(f string, a ...any)    { logBadger("info", f, a) }
func (slogLogger) Debugf(f string, a ...any)   { logBadger("debug", f, a) }

func logBadger(level, format string, args []any) {
	ctx := context.Background()
	if !slog.Default().Enabled(ctx, slog.LevelDebug) {
		return // skip formatting what nobody reads
	}
	msg := strings.TrimSpace(fmt.Sprintf(format, args...))
	slog.Default().Log(ctx, slog.LevelDebug, msg, "component", "badger", "badger_level", level)
}
