// px::notify — the service manager's notification protocol (sd_notify(3)),
// spoken directly: one datagram to $NOTIFY_SOCKET (a path, or "@name" for an
// abstract socket). Without systemd (no NOTIFY_SOCKET) every call is a no-op.
//   READY=1, RELOADING=1 + MONOTONIC_USEC, STOPPING=1, STATUS=..., WATCHDOG=1
#pragma once
#include <cstdint>
#include <string>

namespace px::notify {

// Sends `state` ("READY=1\nSTATUS=..."); false when there is no manager to tell or it failed.
bool send(const std::string& state);
// RELOADING=1 with MONOTONIC_USEC=now, as Type=notify-reload expects.
bool reloading();
// The watchdog interval the manager asked for (WATCHDOG_USEC, for this pid), in microseconds; 0 = none.
uint64_t watchdog_usec();

}  // namespace px::notify
