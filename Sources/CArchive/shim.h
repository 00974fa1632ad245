#include <archive.h>
#include <archive_entry.h>

// The AE_IF* file-type macros do not import into Swift; these do.
static const unsigned int KB_AE_IFREG = AE_IFREG;
static const unsigned int KB_AE_IFDIR = AE_IFDIR;
static const unsigned int KB_AE_IFLNK = AE_IFLNK;
