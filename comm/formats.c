/* formats: see formats.h. Library diagnostics are captured into cmds_error (never
 * printed by the libraries themselves), so every failure names the file. */
#define _GNU_SOURCE
#include "formats.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tiffio.h>
#include <unistd.h>
#include <yaml.h>

#include "fsutil.h"

void cmds_image_free(cmds_image *img) {
  free(img->data);
  memset(img, 0, sizeof *img);
}

void cmds_imagef_free(cmds_imagef *img) {
  free(img->data);
  memset(img, 0, sizeof *img);
}

/* ---- PNG ---------------------------------------------------------------------------- */

typedef struct png_ctx {
  jmp_buf jmp;
  char msg[512];
} png_ctx;

static void png_on_error(png_structp png, png_const_charp msg) {
  png_ctx *c = png_get_error_ptr(png);
  snprintf(c->msg, sizeof c->msg, "%s", msg);
  longjmp(c->jmp, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
  (void)png;
  (void)msg;
}

int cmds_png_read(const char *path, cmds_image *img, cmds_error *err) {
  memset(img, 0, sizeof *img);
  FILE *fp = fopen(path, "rb");
  if (!fp) return CMDS_FAIL(err, CMDS_EINPUT, "%s: cannot open: %s", path, strerror(errno));
  unsigned char sig[8];
  if (fread(sig, 1, 8, fp) != 8 || png_sig_cmp(sig, 0, 8)) {
    fclose(fp);
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: not a PNG file (bad signature)", path);
  }
  png_ctx ctx;
  ctx.msg[0] = 0;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, png_on_error, png_on_warning);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  if (!png || !info) {
    png_destroy_read_struct(&png, &info, NULL);
    fclose(fp);
    return CMDS_FAIL(err, CMDS_ENOMEM, "%s: libpng could not start", path);
  }
  /* Everything libpng touches after setjmp must be volatile or re-read: keep it in img. */
  png_bytep *volatile rows = NULL;
  if (setjmp(ctx.jmp)) {
    png_destroy_read_struct(&png, &info, NULL);
    fclose(fp);
    free(rows);
    cmds_image_free(img);
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: corrupt or truncated PNG (libpng: %s)", path, ctx.msg);
  }
  png_init_io(png, fp);
  png_set_sig_bytes(png, 8);
  png_read_info(png, info);
  int color = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
  if (depth == 16) png_set_swap(png); /* PNG is big-endian; we hand out host order (LE) */
  png_read_update_info(png, info);
  img->width = (int)png_get_image_width(png, info);
  img->height = (int)png_get_image_height(png, info);
  img->channels = png_get_channels(png, info);
  img->bit_depth = png_get_bit_depth(png, info);
  size_t stride = png_get_rowbytes(png, info);
  img->data = cmds_xmalloc(stride * (size_t)img->height);
  rows = cmds_xmalloc(sizeof(png_bytep) * (size_t)img->height);
  for (int r = 0; r < img->height; r++) rows[r] = (png_bytep)img->data + stride * (size_t)r;
  png_read_image(png, rows);
  png_read_end(png, NULL);
  png_destroy_read_struct(&png, &info, NULL);
  fclose(fp);
  free(rows);
  return CMDS_OK;
}

int cmds_png_write(const char *path, const cmds_image *img, cmds_error *err) {
  static const int types[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB,
                               PNG_COLOR_TYPE_RGB_ALPHA};
  if (img->channels < 1 || img->channels > 4 || (img->bit_depth != 8 && img->bit_depth != 16) ||
      img->width <= 0 || img->height <= 0)
    return CMDS_FAIL(err, CMDS_EINTERNAL, "%s: cannot write a %dx%d PNG with %d channels, %d bits",
                     path, img->width, img->height, img->channels, img->bit_depth);
  char partial[4200];
  snprintf(partial, sizeof partial, "%s.partial", path);
  FILE *fp = fopen(partial, "wb");
  if (!fp) return CMDS_FAIL(err, CMDS_EIO, "%s: cannot create: %s", partial, strerror(errno));
  png_ctx ctx;
  ctx.msg[0] = 0;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, png_on_error, png_on_warning);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  png_bytep *volatile rows = NULL;
  if (!png || !info || setjmp(ctx.jmp)) {
    png_destroy_write_struct(&png, &info);
    fclose(fp);
    free(rows);
    unlink(partial);
    return CMDS_FAIL(err, CMDS_EIO, "%s: writing PNG failed (libpng: %s)", path, ctx.msg);
  }
  png_init_io(png, fp);
  png_set_IHDR(png, info, (png_uint_32)img->width, (png_uint_32)img->height, img->bit_depth,
               types[img->channels], PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_set_compression_level(png, 3);
  png_write_info(png, info);
  if (img->bit_depth == 16) png_set_swap(png);
  size_t stride = (size_t)img->width * (size_t)img->channels * (size_t)(img->bit_depth / 8);
  rows = cmds_xmalloc(sizeof(png_bytep) * (size_t)img->height);
  for (int r = 0; r < img->height; r++) rows[r] = (png_bytep)img->data + stride * (size_t)r;
  png_write_image(png, rows);
  png_write_end(png, NULL);
  png_destroy_write_struct(&png, &info);
  free(rows);
  if (fflush(fp) != 0 || fsync(fileno(fp)) != 0 || fclose(fp) != 0) {
    unlink(partial);
    return CMDS_FAIL(err, CMDS_EIO, "%s: cannot flush: %s", partial, strerror(errno));
  }
  if (rename(partial, path) != 0) {
    unlink(partial);
    return CMDS_FAIL(err, CMDS_EIO, "%s: cannot rename into place: %s", path, strerror(errno));
  }
  return CMDS_OK;
}

/* ---- TIFF --------------------------------------------------------------------------- */

static __thread char tiff_msg[512];

static void tiff_on_error(const char *module, const char *fmt, va_list ap) {
  (void)module;
  vsnprintf(tiff_msg, sizeof tiff_msg, fmt, ap);
}

static void tiff_on_warning(const char *module, const char *fmt, va_list ap) {
  (void)module;
  (void)fmt;
  (void)ap;
}

static void tiff_quiet(void) {
  TIFFSetErrorHandler(tiff_on_error);
  TIFFSetWarningHandler(tiff_on_warning);
  tiff_msg[0] = 0;
}

int cmds_tiff_read_f32(const char *path, int channels, cmds_imagef *img, cmds_error *err) {
  memset(img, 0, sizeof *img);
  tiff_quiet();
  if (access(path, R_OK) != 0)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: cannot open: %s", path, strerror(errno));
  TIFF *t = TIFFOpen(path, "r");
  if (!t) return CMDS_FAIL(err, CMDS_EINPUT, "%s: not a readable TIFF (libtiff: %s)", path, tiff_msg);
  uint32_t w = 0, h = 0;
  uint16_t spp = 1, bps = 0, fmt = SAMPLEFORMAT_UINT, planar = PLANARCONFIG_CONTIG;
  TIFFGetField(t, TIFFTAG_IMAGEWIDTH, &w);
  TIFFGetField(t, TIFFTAG_IMAGELENGTH, &h);
  TIFFGetFieldDefaulted(t, TIFFTAG_SAMPLESPERPIXEL, &spp);
  TIFFGetFieldDefaulted(t, TIFFTAG_BITSPERSAMPLE, &bps);
  TIFFGetFieldDefaulted(t, TIFFTAG_SAMPLEFORMAT, &fmt);
  TIFFGetFieldDefaulted(t, TIFFTAG_PLANARCONFIG, &planar);
  int rc = CMDS_OK;
  if (fmt != SAMPLEFORMAT_IEEEFP || bps != 32)
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: %u-bit %s samples, expected 32-bit float", path, bps,
                   fmt == SAMPLEFORMAT_IEEEFP ? "float" : fmt == SAMPLEFORMAT_INT ? "signed integer" : "unsigned integer");
  else if (spp != channels)
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: %u sample(s) per pixel, expected %d (float32 x, y, z)", path,
                   spp, channels);
  else if (w == 0 || h == 0 || w > 65536 || h > 65536)
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: image size %u x %u out of range", path, w, h);
  if (rc) {
    TIFFClose(t);
    return rc;
  }
  size_t px = (size_t)w * h;
  float *data = cmds_xcalloc(px * (size_t)channels, sizeof(float));
  if (TIFFIsTiled(t)) {
    uint32_t tw = 0, th = 0;
    TIFFGetField(t, TIFFTAG_TILEWIDTH, &tw);
    TIFFGetField(t, TIFFTAG_TILELENGTH, &th);
    tmsize_t tsize = TIFFTileSize(t);
    float *tile = cmds_xmalloc((size_t)tsize);
    int nplanes = planar == PLANARCONFIG_SEPARATE ? channels : 1;
    int per = planar == PLANARCONFIG_SEPARATE ? 1 : channels;
    for (int pl = 0; pl < nplanes && !rc; pl++)
      for (uint32_t y = 0; y < h && !rc; y += th)
        for (uint32_t x = 0; x < w && !rc; x += tw) {
          if (TIFFReadTile(t, tile, x, y, 0, (uint16_t)pl) < 0) {
            rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: truncated or corrupt tile at (%u, %u) (libtiff: %s)",
                           path, x, y, tiff_msg);
            break;
          }
          for (uint32_t yy = 0; yy < th && y + yy < h; yy++)
            for (uint32_t xx = 0; xx < tw && x + xx < w; xx++)
              for (int c = 0; c < per; c++)
                data[((size_t)(y + yy) * w + x + xx) * (size_t)channels + (size_t)(pl + c)] =
                    tile[((size_t)yy * tw + xx) * (size_t)per + (size_t)c];
        }
    free(tile);
  } else {
    tmsize_t ssize = TIFFStripSize(t);
    uint32_t rps = h;
    TIFFGetFieldDefaulted(t, TIFFTAG_ROWSPERSTRIP, &rps);
    if (rps > h) rps = h;
    float *strip = cmds_xmalloc((size_t)ssize);
    int nplanes = planar == PLANARCONFIG_SEPARATE ? channels : 1;
    int per = planar == PLANARCONFIG_SEPARATE ? 1 : channels;
    uint32_t nstrips_plane = (h + rps - 1) / rps;
    for (int pl = 0; pl < nplanes && !rc; pl++)
      for (uint32_t s = 0; s < nstrips_plane && !rc; s++) {
        uint32_t row0 = s * rps, nrows = row0 + rps > h ? h - row0 : rps;
        tmsize_t want = (tmsize_t)((size_t)nrows * w * (size_t)per * sizeof(float));
        tmsize_t got = TIFFReadEncodedStrip(t, (uint32_t)pl * nstrips_plane + s, strip, want);
        if (got != want) {
          rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: truncated or corrupt strip %u (%lld of %lld bytes; libtiff: %s)",
                         path, s, (long long)got, (long long)want, tiff_msg[0] ? tiff_msg : "short read");
          break;
        }
        for (size_t i = 0; i < (size_t)nrows * w; i++)
          for (int c = 0; c < per; c++)
            data[((size_t)row0 * w + i) * (size_t)channels + (size_t)(pl + c)] = strip[i * (size_t)per + (size_t)c];
      }
    free(strip);
  }
  TIFFClose(t);
  if (rc) {
    free(data);
    return rc;
  }
  img->width = (int)w;
  img->height = (int)h;
  img->channels = channels;
  img->data = data;
  return CMDS_OK;
}

int cmds_tiff_write_f32(const char *path, const cmds_imagef *img, cmds_error *err) {
  tiff_quiet();
  char partial[4200];
  snprintf(partial, sizeof partial, "%s.partial", path);
  TIFF *t = TIFFOpen(partial, "w");
  if (!t) return CMDS_FAIL(err, CMDS_EIO, "%s: cannot create (libtiff: %s)", partial, tiff_msg);
  TIFFSetField(t, TIFFTAG_IMAGEWIDTH, (uint32_t)img->width);
  TIFFSetField(t, TIFFTAG_IMAGELENGTH, (uint32_t)img->height);
  TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, (uint16_t)img->channels);
  TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, (uint16_t)32);
  TIFFSetField(t, TIFFTAG_SAMPLEFORMAT, (uint16_t)SAMPLEFORMAT_IEEEFP);
  TIFFSetField(t, TIFFTAG_PLANARCONFIG, (uint16_t)PLANARCONFIG_CONTIG);
  TIFFSetField(t, TIFFTAG_PHOTOMETRIC, (uint16_t)(img->channels >= 3 ? PHOTOMETRIC_RGB : PHOTOMETRIC_MINISBLACK));
  TIFFSetField(t, TIFFTAG_COMPRESSION, (uint16_t)COMPRESSION_NONE);
  TIFFSetField(t, TIFFTAG_ROWSPERSTRIP, (uint32_t)img->height);
  if (img->channels > 3) {
    uint16_t extra = EXTRASAMPLE_UNSPECIFIED;
    TIFFSetField(t, TIFFTAG_EXTRASAMPLES, (uint16_t)1, &extra);
  }
  int rc = CMDS_OK;
  size_t stride = (size_t)img->width * (size_t)img->channels;
  for (int r = 0; r < img->height && !rc; r++)
    if (TIFFWriteScanline(t, img->data + stride * (size_t)r, (uint32_t)r, 0) < 0)
      rc = CMDS_FAIL(err, CMDS_EIO, "%s: writing row %d failed (libtiff: %s)", partial, r, tiff_msg);
  TIFFClose(t);
  if (!rc && rename(partial, path) != 0)
    rc = CMDS_FAIL(err, CMDS_EIO, "%s: cannot rename into place: %s", path, strerror(errno));
  if (rc) unlink(partial);
  return rc;
}

/* ---- EyeCandies metadata ------------------------------------------------------------ */

/* Reads a number scalar; CMDS_EINPUT naming file and key if it is not one. */
static int yaml_number(const char *path, const char *key, const char *text, double *out,
                       cmds_error *err) {
  char *end = NULL;
  errno = 0;
  double v = strtod(text, &end);
  if (end == text || *end || errno || !isfinite(v))
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: normalization.%s is '%s', expected a finite number", path,
                     key, text);
  *out = v;
  return CMDS_OK;
}

int cmds_yaml_read_depth_range(const char *path, double *min, double *max, cmds_error *err) {
  FILE *fp = fopen(path, "rb");
  if (!fp) return CMDS_FAIL(err, CMDS_EINPUT, "%s: cannot open: %s", path, strerror(errno));
  yaml_parser_t parser;
  yaml_document_t doc;
  yaml_parser_initialize(&parser);
  yaml_parser_set_input_file(&parser, fp);
  int rc = CMDS_OK;
  if (!yaml_parser_load(&parser, &doc)) {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: not valid YAML (line %zu: %s)", path,
                   parser.problem_mark.line + 1, parser.problem ? parser.problem : "?");
    yaml_parser_delete(&parser);
    fclose(fp);
    return rc;
  }
  int have_min = 0, have_max = 0;
  yaml_node_t *root = yaml_document_get_root_node(&doc);
  yaml_node_t *norm = NULL;
  if (root && root->type == YAML_MAPPING_NODE) {
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
      yaml_node_t *k = yaml_document_get_node(&doc, p->key);
      if (k && k->type == YAML_SCALAR_NODE && !strcmp((char *)k->data.scalar.value, "normalization"))
        norm = yaml_document_get_node(&doc, p->value);
    }
  }
  if (!norm || norm->type != YAML_MAPPING_NODE) {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: no 'normalization: {min, max}' mapping", path);
  } else {
    for (yaml_node_pair_t *p = norm->data.mapping.pairs.start; p < norm->data.mapping.pairs.top && !rc; p++) {
      yaml_node_t *k = yaml_document_get_node(&doc, p->key), *v = yaml_document_get_node(&doc, p->value);
      if (!k || !v || k->type != YAML_SCALAR_NODE) continue;
      const char *key = (const char *)k->data.scalar.value;
      int is_min = !strcmp(key, "min"), is_max = !strcmp(key, "max");
      if (!is_min && !is_max) continue;
      if (v->type != YAML_SCALAR_NODE) {
        rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: normalization.%s is not a number", path, key);
        break;
      }
      rc = yaml_number(path, key, (const char *)v->data.scalar.value, is_min ? min : max, err);
      have_min |= is_min;
      have_max |= is_max;
    }
    if (!rc && (!have_min || !have_max))
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: normalization lacks '%s'", path, have_min ? "max" : "min");
  }
  yaml_document_delete(&doc);
  yaml_parser_delete(&parser);
  fclose(fp);
  return rc;
}

int cmds_yaml_write_depth_range(const char *path, double min, double max, cmds_error *err) {
  char text[256];
  int n = snprintf(text, sizeof text, "normalization:\n  max: %.9g\n  min: %.9g\n", max, min);
  return cmds_write_file_atomic(path, text, (size_t)n, err);
}

int cmds_matrix4_read(const char *path, double m[16], cmds_error *err) {
  FILE *fp = fopen(path, "r");
  if (!fp) return CMDS_FAIL(err, CMDS_EINPUT, "%s: cannot open: %s", path, strerror(errno));
  double v[17];
  int n = 0;
  char tok[128];
  int rc = CMDS_OK;
  while (n < 17 && fscanf(fp, "%127s", tok) == 1) {
    char *end = NULL;
    v[n] = strtod(tok, &end);
    if (end == tok || *end || !isfinite(v[n])) {
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: '%s' is not a finite number (expected a 4x4 matrix)", path, tok);
      break;
    }
    n++;
  }
  fclose(fp);
  if (rc) return rc;
  if (n != 16 && n != 12)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: %s%d numbers, expected 16 (4x4) or 12 (3x4)", path,
                     n > 16 ? "more than " : "", n > 16 ? 16 : n);
  for (int i = 0; i < 12; i++) m[i] = v[i];
  if (n == 16) for (int i = 12; i < 16; i++) m[i] = v[i];
  else {
    m[12] = m[13] = m[14] = 0;
    m[15] = 1;
  }
  return CMDS_OK;
}

int cmds_matrix4_write(const char *path, const double m[16], cmds_error *err) {
  char text[1024];
  int n = 0;
  for (int r = 0; r < 4; r++)
    n += snprintf(text + n, sizeof text - (size_t)n, "%.17g %.17g %.17g %.17g\n", m[r * 4], m[r * 4 + 1],
                  m[r * 4 + 2], m[r * 4 + 3]);
  return cmds_write_file_atomic(path, text, (size_t)n, err);
}
