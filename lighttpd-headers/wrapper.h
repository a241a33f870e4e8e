/* bindgen input for the lighttpd plugin: lighttpd's own headers, taken from
 * Debian's source package for exactly the installed version (see
 * `make lighttpd-src`). Nothing here is vendored. The defines lighttpd's
 * configure would have written are passed by build.rs; HAVE_IPV6 and
 * HAVE_SYS_UN_H change the size of sock_addr inside `connection`, so they must
 * match the Debian build. */
#include "first.h"
#include "base.h"
#include "plugin.h"
#include "plugin_config.h"
#include "array.h"
#include "buffer.h"
#include "chunk.h"
#include "fdevent.h"
#include "http_chunk.h"
#include "http_header.h"
#include "http_cgi.h"
#include "log.h"
#include "request.h"
#include "response.h"
#include "stat_cache.h"
#include "http_etag.h"
#include "http_kv.h"
#include "configfile.h"
