/* The httpd and APR API that sufcgi's Apache glue uses. bindgen reads this with
 * the include paths and defines the installed httpd reports (apxs -q). Nothing
 * here is copied from httpd: it only includes the installed headers. */
#include <httpd.h>
#include <http_config.h>
#include <http_core.h>
#include <http_log.h>
#include <http_main.h>
#include <http_protocol.h>
#include <http_request.h>
#include <util_script.h>
#include <ap_mpm.h>
#include <mpm_common.h>
#include <unixd.h>
#include <apr_strings.h>
#include <apr_tables.h>
#include <apr_pools.h>
#include <apr_buckets.h>
#include <apr_portable.h>
#include <mod_core.h>
#include <apr_thread_proc.h>
