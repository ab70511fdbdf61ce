// SPDX-License-Identifier: GPL-2.0
/*
 * crashext_xadamage: a PRIVATE XArray holding the damage patterns of the
 * seed bug, for crashext's live check (tests/test_live.py).  It never
 * touches a page cache: the XArray, its nodes and its folios belong to
 * this module alone, and the module cannot be unloaded (the damaged tree
 * must never reach xa_destroy()).
 *
 * /proc/crashext_xadamage (root only) gives the XArray's address and,
 * per pattern, where the damage is (indices, node, slots, folio).
 *
 * Regions (one per slot of the shift-12 root node):
 *   0x1000 stale_split   an order-6 folio split to order 4 by the kernel's
 *                        own xas_split_alloc()/xas_split() (lib/xarray.c),
 *                        as split_huge_page() does, and never replaced by
 *                        the smaller folios: one folio at slots 0/16/32/48
 *   0x2000 sibling_self  an order-2 entry whose last sibling points at
 *                        itself (xa_mk_sibling(11) in slot 11)
 *          sibling_to_sibling  an order-2 entry whose last sibling points
 *                        at another sibling (slot 19 := xa_mk_sibling(17))
 *   0x3000 duplicate     slot 7 := the folio of slot 5
 *   0x4000 node_two_slots  slot 3 of a shift-6 node := the node entry of
 *                        its slot 1 (one leaf under two slots)
 *   0x5000 clean         order-3 and order-6 entries, untouched (control)
 */
#include <linux/module.h>
#include <linux/xarray.h>
#include <linux/mm.h>
#include <linux/gfp.h>
#include <linux/slab.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>

static struct xarray *xa;
static struct folio *fa, *fb1, *fb2, *fc1, *fc2, *fd1, *fd3, *fe1, *fe2;
static struct xa_node *leaf_a, *leaf_b, *leaf_c, *node_d, *leaf_d1, *leaf_d3;

/* A folio as the page cache holds it: one reference per page
 * (__filemap_add_folio(): folio_ref_add(folio, nr)), index set. */
static struct folio *mkfolio(unsigned int order, unsigned long index)
{
	struct folio *f = folio_alloc(GFP_KERNEL | __GFP_ZERO, order);

	if (!f)
		return NULL;
	if (order)
		folio_ref_add(f, (1 << order) - 1);
	f->index = index;
	return f;
}

static int store(unsigned long index, unsigned int order, void *entry)
{
	XA_STATE_ORDER(xas, xa, index, order);

	do {
		xas_lock(&xas);
		xas_store(&xas, entry);
		xas_unlock(&xas);
	} while (xas_nomem(&xas, GFP_KERNEL));
	return xas_error(&xas);
}

/* The leaf node holding @index (xas_load() leaves it in xa_node). */
static struct xa_node *leaf_of(unsigned long index)
{
	XA_STATE(xas, xa, index);

	xas_load(&xas);
	return xas_invalid(&xas) ? NULL : xas.xa_node;
}

static int build(void)
{
	int err = 0;

	xa = kzalloc(sizeof(*xa), GFP_KERNEL);
	if (!xa)
		return -ENOMEM;
	xa_init(xa);

	fa = mkfolio(6, 0x1040);
	fb1 = mkfolio(2, 0x2008);
	fb2 = mkfolio(2, 0x2010);
	fc1 = mkfolio(0, 0x3005);
	fc2 = mkfolio(0, 0x3007);
	fd1 = mkfolio(0, 0x4041);
	fd3 = mkfolio(0, 0x40c1);
	fe1 = mkfolio(3, 0x5008);
	fe2 = mkfolio(6, 0x5040);
	if (!fa || !fb1 || !fb2 || !fc1 || !fc2 || !fd1 || !fd3 || !fe1 || !fe2)
		return -ENOMEM;
	err = err ?: store(0x1040, 6, fa);
	err = err ?: store(0x2008, 2, fb1);
	err = err ?: store(0x2010, 2, fb2);
	err = err ?: store(0x3005, 0, fc1);
	err = err ?: store(0x3007, 0, fc2);
	err = err ?: store(0x4041, 0, fd1);
	err = err ?: store(0x40c1, 0, fd3);
	err = err ?: store(0x5008, 3, fe1);
	err = err ?: store(0x5040, 6, fe2);
	if (err)
		return err;

	/* stale_split: what split_huge_page() does first (xas_split_alloc()
	 * then xas_split() of the order-6 entry into order-4 entries, the
	 * old folio copied into each), without the step that puts the new
	 * smaller folios in. */
	{
		XA_STATE_ORDER(xas, xa, 0x1040, 4);

		xas_split_alloc(&xas, fa, 6, GFP_KERNEL);
		if (xas_error(&xas))
			return xas_error(&xas);
		xas_lock(&xas);
		xas_split(&xas, fa, 6);
		xas_unlock(&xas);
	}

	xa_lock(xa);
	leaf_a = leaf_of(0x1040);
	leaf_b = leaf_of(0x2008);
	leaf_c = leaf_of(0x3005);
	leaf_d1 = leaf_of(0x4041);
	leaf_d3 = leaf_of(0x40c1);
	node_d = leaf_d1 ? xa_parent_locked(xa, leaf_d1) : NULL;
	if (!leaf_a || !leaf_b || !leaf_c || !leaf_d1 || !leaf_d3 || !node_d ||
	    leaf_a->shift || leaf_b->shift || leaf_c->shift || node_d->shift != 6) {
		xa_unlock(xa);
		return -EINVAL;
	}
	/* sibling_self: slot 11 (index 0x200b) points at itself. */
	rcu_assign_pointer(leaf_b->slots[11], xa_mk_sibling(11));
	/* sibling_to_sibling: slot 19 (index 0x2013) points at slot 17,
	 * itself a sibling. */
	rcu_assign_pointer(leaf_b->slots[19], xa_mk_sibling(17));
	/* duplicate: slot 7 (index 0x3007) := the folio of slot 5. */
	rcu_assign_pointer(leaf_c->slots[7], fc1);
	/* node_two_slots: slot 3 (index 0x40c0) := the leaf of slot 1. */
	rcu_assign_pointer(node_d->slots[3], xa_mk_node(leaf_d1));
	xa_unlock(xa);
	return 0;
}

static int show(struct seq_file *m, void *v)
{
	seq_printf(m, "xarray %px\n", xa);
	seq_printf(m, "stale_split indices 0x1040,0x1050,0x1060,0x1070 "
		   "node %px slots 0,16,32,48 folio %px order 6\n", leaf_a, fa);
	seq_printf(m, "sibling_self indices 0x200b node %px slots 11 "
		   "folio %px order 2\n", leaf_b, fb1);
	seq_printf(m, "sibling_to_sibling indices 0x2013 node %px slots 19 "
		   "folio %px order 2\n", leaf_b, fb2);
	seq_printf(m, "duplicate indices 0x3005,0x3007 node %px slots 5,7 "
		   "folio %px order 0\n", leaf_c, fc1);
	seq_printf(m, "node_two_slots indices 0x40c0 node %px slots 3 "
		   "child %px\n", node_d, leaf_d1);
	seq_printf(m, "clean indices 0x5008,0x5040 folio %px order 3 "
		   "folio %px order 6\n", fe1, fe2);
	return 0;
}

static int __init xadamage_init(void)
{
	int err = build();

	if (err) {
		pr_err("crashext_xadamage: building the XArray failed: %d\n", err);
		return err;	/* nothing damaged yet is reachable by anyone */
	}
	if (!proc_create_single("crashext_xadamage", 0400, NULL, show))
		return -ENOMEM;
	pr_info("crashext_xadamage: private XArray at %px\n", xa);
	return 0;
}
module_init(xadamage_init);
/* No module_exit: the damaged XArray must never be destroyed. */

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("crashext test: a private XArray with the seed's damage patterns");
